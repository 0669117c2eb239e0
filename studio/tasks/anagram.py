"""Visual anagrams: one picture, a different reading under each view (the families that declare
the task run it — Lumina-Next and Lumina-Image 2.0 — each giving the sampler its flow).

Outputs, in order: the picture; the picture under each view other than the identity; an animated
GIF of the picture turning into its viewed reading (as the visual anagrams paper shows them).
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
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps")

    prompts: list[str] = Field(min_length=2, max_length=4)
    views: list[str] = Field(max_length=4)
    style: str = Field(default="", max_length=200)  # e.g. "an oil painting of", put before every prompt
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    prompt: str = ""  # derived: what the history shows and searches

    @model_validator(mode="before")
    @classmethod
    def _prompt_from_prompts(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("prompts"), list):
            style = str(data.get("style", "")).strip()
            data = {**data, "prompt": " / ".join(f"{style} {p}".strip() for p in data["prompts"])}
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
        return [f"{self.style.strip()} {p.strip()}".strip() for p in self.prompts]

    def check_against(self, card: ModelCard) -> None:
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"Size {self.width}x{self.height} is not possible: {problem}")
        anagram.check_views(self.views, self.width, self.height)
        if self.option("solver") == "dopri5":
            raise InvalidInput("anagrams need a fixed-step solver (euler, midpoint or rk4): every step combines views")


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
        frames = output.used.get("animation")
        used = {k: v for k, v in output.used.items() if k != "animation"}

        writers = [png_writer(self.name, image, spec, card, ctx, used, infotext) for image in output.items]
        if frames:
            writers.append(lambda index: save_gif(
                frames, ctx.outputs_dir, output_relpath(self.name, ctx.job_id, index, "gif", ctx.created_at),
                job=job_json(self.name, index, spec, card, ctx, used)))
        return save_all(writers)


def run_anagram(flow: anagram.Flow, spec: AnagramSpec, *, solver: str, shift: float, generator: torch.Generator,
                on_step: StepCallback, sampler: str) -> TaskOutput:
    """Sample the anagram on a family's flow; the outputs are the picture, each viewed reading, and
    the animation of the first view that changes the picture."""
    image, latents, evaluations = anagram.sample(
        flow, view_names=spec.views, width=spec.width, height=spec.height, generator=generator, solver=solver,
        steps=spec.steps, shift=shift, on_step=on_step)
    items: list[Any] = [image]
    animated = None
    for name in spec.views:
        view = anagram.VIEWS[name]
        if name != "identity":
            viewed = anagram.viewed_image(flow, latents, view)
            items.append(viewed)
            animated = animated or animation(image, view, viewed)
    return TaskOutput(items=items, used={"sampler": sampler, "model_evaluations": evaluations,
                                         "animation": animated})
