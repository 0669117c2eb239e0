"""Text-to-image with the Lumina family (LuminaPipeline for Lumina-Next, Lumina2Pipeline for Image 2.0).

One spec for both: prompt, negative prompt, size, steps, CFG, scheduler shift, seed, images per
prompt. Outputs are PNGs with the A1111 `parameters` chunk and the full job JSON.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from pydantic import Field

from .. import __version__
from ..errors import InvalidInput
from ..media import SavedFile, format_infotext, output_relpath, save_png
from ..zoo.cards import ModelCard
from .base import JobContext, StepCallback, TaskOutput, TaskSpec

# Scheduler class -> the sampler name A1111-style readers show.
SAMPLER_NAMES = {"FlowMatchEulerDiscreteScheduler": "Euler"}


class ImageSpec(TaskSpec):
    task: ClassVar[str] = "image"
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0}

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    # The flow-matching time shift; None keeps the scheduler's own (from the card or the checkpoint).
    shift: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    num_images: int = Field(default=1, ge=1, le=8)

    def check_against(self, card: ModelCard) -> None:
        super().check_against(card)
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
        if spec.shift is not None:
            # The scheduler is rebuilt per job so one job's shift never leaks into the next.
            pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, shift=spec.shift)

        def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
            on_step(index + 1, spec.steps)
            return tensors

        vae = getattr(pipeline, "vae", None)
        if vae is not None and hasattr(vae, "enable_tiling"):
            if spec.width * spec.height > VAE_TILING_PIXELS:
                vae.enable_tiling()
            else:
                vae.disable_tiling()
            # One image at a time through the VAE: same pixels, a fraction of the decode memory.
            vae.enable_slicing() if spec.num_images > 1 else vae.disable_slicing()

        extra: dict[str, Any] = {}
        if "clean_caption" in inspect.signature(pipeline.__call__).parameters:
            # Caption cleaning needs bs4/ftfy and rewrites the prompt; Lumina's own code never does it.
            extra["clean_caption"] = False
        # A CPU generator gives the same noise for a seed on every device.
        generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        result = pipeline(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            width=spec.width,
            height=spec.height,
            num_inference_steps=spec.steps,
            guidance_scale=spec.cfg,
            num_images_per_prompt=spec.num_images,
            generator=generator,
            callback_on_step_end=step_end,
            **extra,
        )
        return TaskOutput(items=list(result.images), used={"sampler": sampler_name(pipeline)})

    def infotext(self, spec: ImageSpec, card: ModelCard, sampler: str) -> str:
        return format_infotext(
            spec.prompt,
            spec.negative_prompt,
            {
                "Steps": spec.steps,
                "Sampler": sampler,
                "CFG scale": spec.cfg,
                "Seed": spec.seed,
                "Size": f"{spec.width}x{spec.height}",
                "Model": card.id,
                "Shift": spec.shift,
                "Version": f"studio {__version__}",
            },
        )

    def save(self, output: TaskOutput, spec: ImageSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        infotext = self.infotext(spec, card, output.used["sampler"])
        saved = []
        for index, image in enumerate(output.items):
            job_json = {
                "job_id": ctx.job_id,
                "task": self.name,
                "index": index,
                "params": spec.model_dump(mode="json"),
                "used": output.used,
                "model_title": card.title,
                "studio_version": __version__,
            }
            relpath = output_relpath(self.name, ctx.job_id, index, "png", ctx.created_at)
            try:
                saved.append(save_png(image, ctx.outputs_dir, relpath, infotext=infotext, job=job_json))
            except Exception:
                # All or nothing: a job never leaves part of its set behind.
                for done in saved:
                    done.path.unlink(missing_ok=True)
                raise
        return saved


def sampler_name(pipeline: Any) -> str:
    cls = type(getattr(pipeline, "scheduler", None)).__name__
    return SAMPLER_NAMES.get(cls, cls)
