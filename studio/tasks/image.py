"""Text-to-image: prompt, negative prompt, size, steps, CFG, seed and images per prompt; whatever
else a model takes (Lumina-Next's solver, LlamaGen's temperature…) its family declares and runs
(studio.families). Outputs are PNGs with the A1111 `parameters` chunk and the full job JSON.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from pydantic import Field

from .. import __version__
from ..errors import InvalidInput
from ..media import SavedFile, format_infotext
from ..runtime import preview
from ..zoo.cards import ModelCard
from .loras import Loras, prompt_tags
from .base import (JobContext, StepCallback, TaskOutput, TaskSpec, batch_seeds, family_lines, png_writer, run_family,
                   save_all)

# Scheduler class or solver -> the sampler name A1111-style readers show.
SAMPLER_NAMES = {"FlowMatchEulerDiscreteScheduler": "Euler", "euler": "Euler", "midpoint": "Midpoint",
                 "rk4": "RK4", "rk4_classic": "RK4 classic", "dopri5": "DOPRI5", "dopri8": "DOPRI8"}
__all__ = ["ImageSpec", "ImageTask", "SAMPLER_NAMES", "run_diffusers_image"]


class ImageSpec(TaskSpec):
    task: ClassVar[str] = "image"
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps", "loras")
    INPUTS: ClassVar[tuple[str, ...]] = ("loras",)  # LoRA adapters (tasks/loras.py): brought, not a setting

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    num_images: int = Field(default=1, ge=1, le=8)
    loras: Loras = None  # [{"name", "weight"}]: LoRA adapters loaded for this job only

    def check_against(self, card: ModelCard) -> None:
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"Size {self.width}x{self.height} is not possible: {problem}")


# Above this many pixels the VAE decodes in tiles: its activations grow with the image, the weights don't.
VAE_TILING_PIXELS = 1536 * 1536


class ImageTask:
    name = "image"
    spec_type = ImageSpec

    def working_bytes(self, spec: ImageSpec, card: ModelCard) -> int:
        """Activation memory the job needs besides the weights: it grows with pixels and batch."""
        megapixels = spec.width * spec.height * spec.num_images / 2**20
        return int(card.working_gb_per_mpx * megapixels * 2**30)

    def run(self, pipeline: Any, spec: ImageSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        self._set_vae_memory_mode(pipeline, spec)
        return run_family(self.name, pipeline, spec, card, on_step)

    @staticmethod
    def _set_vae_memory_mode(pipeline: Any, spec: ImageSpec) -> None:
        vae = getattr(pipeline, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        if spec.width * spec.height > VAE_TILING_PIXELS:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        # One image at a time through the VAE: same pixels, a fraction of the decode memory.
        vae.enable_slicing() if spec.num_images > 1 else vae.disable_slicing()

    def infotext(self, spec: ImageSpec, card: ModelCard, sampler: str, extra: dict[str, Any] | None = None) -> str:
        # `extra`: facts of the run a family reports beside its options (Infinity's scales and VAE).
        return format_infotext(prompt_tags(spec.prompt, spec.loras), spec.negative_prompt, {
            "Steps": spec.steps, "Sampler": sampler, "CFG scale": spec.cfg, "Seed": spec.seed,
            "Size": f"{spec.width}x{spec.height}", "Model": card.id, **family_lines(self.name, spec, card),
            **(extra or {}), "Version": f"studio {__version__}"})

    def save(self, output: TaskOutput, spec: ImageSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        # Each image's infotext carries its own seed (A1111's convention): read back, it remakes that image.
        seeds = batch_seeds(spec.seed, len(output.items))
        return save_all([png_writer(self.name, image, spec, card, ctx, output.used,
                                    self.infotext(spec.model_copy(update={"seed": seed}), card,
                                                  output.used["sampler"], output.used.get("infotext")))
                         for image, seed in zip(output.items, seeds)])


def run_diffusers_image(pipeline: Any, spec: ImageSpec, on_step: StepCallback) -> TaskOutput:
    """A diffusers text-to-image pipeline's own call (its scheduler, its loop), with the job's fields."""
    shift = spec.option("shift")
    if shift is not None:
        # The scheduler is rebuilt per job so one job's shift never leaks into the next.
        pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, shift=shift)

    def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
        on_step(index + 1, spec.steps)
        preview.offer(index + 1, spec.steps, tensors["latents"], getattr(pipeline, "vae", None))  # the state x_t
        return tensors

    extra: dict[str, Any] = {}
    if "clean_caption" in inspect.signature(pipeline.__call__).parameters:
        # Caption cleaning needs bs4/ftfy and rewrites the prompt; Lumina's own code never does it.
        extra["clean_caption"] = False
    result = pipeline(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        num_inference_steps=spec.steps,
        guidance_scale=spec.cfg,
        num_images_per_prompt=spec.num_images,
        generator=seeded_generators(spec.seed, spec.num_images),
        callback_on_step_end=step_end,
        **extra,
    )
    used: dict[str, Any] = {"sampler": sampler_name(pipeline)}
    if pipeline.scheduler.config.get("use_dynamic_shifting"):
        # The pipeline derives the shift from the image size itself (Lumina-Image 2.0's own rule),
        # so the static shift did not apply; say what ran.
        used["schedule"] = "dynamic shift from the resolution"
    return TaskOutput(items=list(result.images), used=used)


def seeded_generators(seed: int, count: int) -> list[torch.Generator]:
    """One CPU generator per image of a batch, seeded seed, seed+1, …: the same noise on every device,
    and image k of a batch is the image its own seed makes alone (diffusers draws each sample's noise
    from its own generator when given a list)."""
    return [torch.Generator(device="cpu").manual_seed(s) for s in batch_seeds(seed, count)]


def sampler_name(pipeline: Any) -> str:
    cls = type(getattr(pipeline, "scheduler", None)).__name__
    return SAMPLER_NAMES.get(cls, cls)
