"""Visual anagrams: one picture, a different reading under each view (the families that declare
the task run it — Lumina-Next and Lumina-Image 2.0 — each giving the sampler its two phases).

Outputs, in order: the refined picture; the picture under each view other than the identity; the
init phase's preview at the training size (kind "preview"); an animated GIF of the picture turning
into its viewed reading (as the visual anagrams paper shows them).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image, ImageOps
from pydantic import Field, model_validator

from ..engines import anagram
from ..errors import InvalidInput
from ..media import SavedFile, format_infotext, output_relpath, save_gif
from ..zoo.cards import ModelCard
from .base import (JobContext, StepCallback, TaskOutput, TaskSpec, family_lines, job_json, png_writer, run_family,
                   save_all)

ANIMATION_FRAMES = 16


class AnagramSpec(TaskSpec):
    task: ClassVar[str] = "anagram"
    # The style is the authors' run.sh one; a family's recipe (Lumina-Next's: cfg, shift, negative) wins.
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0,
                                           "style": "an oil painting of", "negative_prompt": ""}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps")

    prompts: list[str] = Field(min_length=2, max_length=4)
    views: list[str] = Field(max_length=4)
    # Put before every prompt that does not already start with it. None: the model's default.
    style: str | None = Field(default=None, max_length=200)
    # None: the model's default (Lumina-Next's is the authors' fixed negative); "" is no negative.
    negative_prompt: str | None = None
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    prompt: str = ""  # derived: what the history shows and searches

    @model_validator(mode="before")
    @classmethod
    def _prompt_from_prompts(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            style = str(data.get("style") or "")
            data = {**data, "prompt": " / ".join(with_style(style, str(p)) for p in data["prompts"])}
        return data

    @model_validator(mode="after")
    def _one_view_per_prompt(self) -> "AnagramSpec":
        if len(self.views) != len(self.prompts):
            raise ValueError(f"each prompt needs its view: {len(self.prompts)} prompts, {len(self.views)} views")
        if any(not p.strip() for p in self.prompts):
            raise ValueError("every prompt of an anagram needs text: each one is a reading of the picture")
        if len(set(self.views)) != len(self.views):
            raise ValueError("each prompt needs a different view")
        return self

    def styled(self) -> list[str]:
        return [with_style(self.style or "", p) for p in self.prompts]

    def check_against(self, card: ModelCard) -> None:
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"Size {self.width}x{self.height} is not possible: {problem}")
        anagram.check_views(self.views, self.width, self.height)
        if self.option("solver") is not None:
            anagram.check_solver(self.option("solver"))
        anagram.check_steps(self.steps)


def with_style(style: str, prompt: str) -> str:
    """"style prompt", or the prompt alone when it already starts with the style (a reading copied
    back from a picture's infotext): never "an oil painting of an oil painting of an old man"."""
    style, prompt = style.strip(), prompt.strip()
    if not style:
        return prompt
    rest = prompt[len(style):]
    if prompt[:len(style)].casefold() == style.casefold() and (not rest or not rest[0].isalnum()):
        return prompt
    return f"{style} {prompt}".strip()


def animation(image: Image.Image, view: anagram.View, viewed: Image.Image) -> list[Image.Image]:
    """Frames of the picture turning into its reading under `view`, and back."""
    frames = []
    for i in range(ANIMATION_FRAMES + 1):
        f = i / ANIMATION_FRAMES
        if view.name.startswith("rotate"):
            angle = {"rotate_90": -90, "rotate_180": 180, "rotate_270": 90}[view.name] * f
            frames.append(image.rotate(angle, resample=Image.BICUBIC, fillcolor=(0, 0, 0)))
        elif view.name.startswith("flip"):
            scale = abs(1 - 2 * f)  # squash to a line, then open the other way round
            turned = ImageOps.flip(image) if view.name == "flip_vertical" else ImageOps.mirror(image)
            source = image if f < 0.5 else turned
            w, h = image.size
            size = (w, max(1, int(h * scale))) if view.name == "flip_vertical" else (max(1, int(w * scale)), h)
            canvas = Image.new("RGB", image.size)
            canvas.paste(source.resize(size), ((w - size[0]) // 2, (h - size[1]) // 2))
            frames.append(canvas)
        else:
            frames.append(Image.blend(image, viewed, f))
    hold = [frames[0]] * 4 + frames + [frames[-1]] * 4
    return hold + hold[::-1]


class AnagramTask:
    name = "anagram"
    spec_type = AnagramSpec

    def working_bytes(self, spec: AnagramSpec, card: ModelCard) -> int:
        return int(card.working_gb_per_mpx * spec.width * spec.height / 2**20 * 2**30)

    def run(self, pipeline: Any, spec: AnagramSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        return run_family(self.name, pipeline, spec, card, on_step)

    def save(self, output: TaskOutput, spec: AnagramSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        readings = "\n".join(f"{anagram.VIEWS[v].title}: {p}" for v, p in zip(spec.views, spec.styled()))
        infotext = format_infotext(readings, spec.negative_prompt, {
            "Steps": spec.steps, "Sampler": output.used["sampler"], "CFG scale": spec.cfg, "Seed": spec.seed,
            "Size": f"{spec.width}x{spec.height}", "Model": card.id, "Views": ",".join(spec.views),
            **family_lines(self.name, spec, card)})
        frames, preview = output.used.get("animation"), output.used.get("preview")
        used = {k: v for k, v in output.used.items() if k not in ("animation", "preview")}

        writers = [png_writer(self.name, image, spec, card, ctx, used, infotext) for image in output.items]
        if preview is not None:
            writers.append(png_writer(self.name, preview, spec, card, ctx, used, infotext, kind="preview"))
        if frames:
            writers.append(lambda index: save_gif(
                frames, ctx.outputs_dir, output_relpath(self.name, ctx.job_id, index, "gif", ctx.created_at),
                job=job_json(self.name, index, spec, card, ctx, used)))
        return save_all(writers)


def run_anagram(model: anagram.TwoPhase, spec: AnagramSpec, *, solver: str, shift: float,
                generator: torch.Generator, on_step: StepCallback, sampler: str) -> TaskOutput:
    """Sample the anagram on a family's two phases; the outputs are the refined picture, each viewed
    reading, the init phase's preview and the animation of the first view that changes the picture.
    The job records each phase's size, model evaluations and solver steps."""
    result = anagram.sample(model, view_names=spec.views, width=spec.width, height=spec.height, generator=generator,
                            solver=solver, steps=spec.steps, shift=shift, on_step=on_step)
    items: list[Any] = [result.picture]
    animated = None
    for name in spec.views:
        view = anagram.VIEWS[name]
        if name != "identity":
            viewed = anagram.reading(result.pixels, view)
            items.append(viewed)
            animated = animated or animation(result.picture, view, viewed)
    init_width, init_height = model.init_size
    phases = {"init": {"size": f"{init_width}x{init_height}", "model_evaluations": result.evaluations["init"],
                       "solver_steps": result.solver_steps},
              "refine": {"size": f"{spec.width}x{spec.height}", "model_evaluations": result.evaluations["refine"],
                         "solver_steps": result.solver_steps}}
    return TaskOutput(items=items, used={"sampler": sampler, "model_evaluations": sum(result.evaluations.values()),
                                         "phases": phases, "preview": result.preview, "animation": animated})
