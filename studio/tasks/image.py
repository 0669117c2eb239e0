"""Text-to-image: the Lumina family (LuminaPipeline for Lumina-Next, Lumina2Pipeline for Image 2.0)
and LlamaGen (the native autoregressive engine, class- or text-conditional).

One spec for all: prompt, negative prompt, size, steps, CFG, scheduler shift, seed, images per
prompt, plus Lumina-Next's sampling options and LlamaGen's (class, temperature, top-k, top-p); each
family refuses the others' options. Outputs are PNGs with the A1111 `parameters` chunk and the full
job JSON.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from pydantic import Field

from .. import __version__
from ..errors import InvalidInput
from ..engines import lumina_next
from ..media import SavedFile, format_infotext
from ..zoo.cards import ModelCard
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, png_writer, save_all
from .llamagen_options import (
    LLAMAGEN_FAMILY,
    TokenSampling,
    is_llamagen,
    llamagen_fallbacks,
    refuse_foreign_options,
    takes_class,
    with_class,
)
from .lumina_options import (
    LUMINA_NEXT_FAMILY,
    LUMINA_NEXT_ONLY,
    FlowSampling,
    family_fallbacks,
    refuse_lumina_next_options,
)

# Scheduler class or solver -> the sampler name A1111-style readers show.
SAMPLER_NAMES = {"FlowMatchEulerDiscreteScheduler": "Euler", "euler": "Euler", "midpoint": "Midpoint",
                 "rk4": "RK4", "dopri5": "DOPRI5"}
__all__ = ["ImageSpec", "ImageTask", "LLAMAGEN_FAMILY", "LUMINA_NEXT_FAMILY", "LUMINA_NEXT_ONLY"]
LLAMAGEN_SAMPLER = "LlamaGen (autoregressive)"


class ImageSpec(FlowSampling, TokenSampling, TaskSpec):
    task: ClassVar[str] = "image"
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0}

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    num_images: int = Field(default=1, ge=1, le=8)

    @classmethod
    def fallbacks_for(cls, card: ModelCard) -> dict[str, Any]:
        if is_llamagen(card):
            return llamagen_fallbacks(card, cls.FALLBACKS)
        return family_fallbacks(card, cls.FALLBACKS)

    def resolved(self, card: ModelCard) -> "ImageSpec":
        spec = self
        if takes_class(card):  # the class settled first: from class_id, or looked up from the prompt
            spec = type(self).parse(with_class(self.model_dump(), card))
        return super(ImageSpec, spec).resolved(card)

    def check_against(self, card: ModelCard) -> None:
        super().check_against(card)
        problem = card.size_problem(self.width, self.height)
        if problem:
            raise InvalidInput(f"Size {self.width}x{self.height} is not possible: {problem}")
        refuse_lumina_next_options(self, card)
        refuse_foreign_options(self, card)


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
        # A CPU generator gives the same noise for a seed on every device.
        generator = torch.Generator(device="cpu").manual_seed(spec.seed)
        if card.family == LUMINA_NEXT_FAMILY:
            return self._run_lumina_next(pipeline, spec, on_step, generator)
        if is_llamagen(card):
            return self._run_llamagen(pipeline, spec, on_step, generator)
        if spec.shift is not None:
            # The scheduler is rebuilt per job so one job's shift never leaks into the next.
            pipeline.scheduler = type(pipeline.scheduler).from_config(pipeline.scheduler.config, shift=spec.shift)

        def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
            on_step(index + 1, spec.steps)
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
            generator=generator,
            callback_on_step_end=step_end,
            **extra,
        )
        used: dict[str, Any] = {"sampler": sampler_name(pipeline)}
        if pipeline.scheduler.config.get("use_dynamic_shifting"):
            # The pipeline derives the shift from the image size itself (Lumina-Image 2.0's own rule),
            # so the static shift did not apply; say what ran.
            used["schedule"] = "dynamic shift from the resolution"
        return TaskOutput(items=list(result.images), used=used)

    @staticmethod
    def _run_lumina_next(pipeline: Any, spec: ImageSpec, on_step: StepCallback,
                         generator: torch.Generator) -> TaskOutput:
        opts = spec.lumina_next_options()
        images, evaluations = lumina_next.sample(
            pipeline, prompt=spec.prompt, negative_prompt=spec.negative_prompt, width=spec.width,
            height=spec.height, num_images=spec.num_images, generator=generator, opts=opts, on_step=on_step)
        return TaskOutput(items=images, used={"sampler": SAMPLER_NAMES[spec.solver],
                                              "model_evaluations": evaluations})

    @staticmethod
    def _run_llamagen(pipeline: Any, spec: ImageSpec, on_step: StepCallback,
                      generator: torch.Generator) -> TaskOutput:
        # Progress is per row of image tokens; one batch of num_images, like the original's samplers.
        condition = ({"class_ids": [spec.class_id] * spec.num_images} if pipeline.kind == "c2i"
                     else {"prompts": [spec.prompt] * spec.num_images})
        images = pipeline(**condition, cfg_scale=spec.cfg, temperature=spec.temperature, top_k=spec.top_k,
                          top_p=spec.top_p, generator=generator, on_progress=on_step)
        return TaskOutput(items=images, used={"sampler": LLAMAGEN_SAMPLER, "image_tokens": pipeline.grid ** 2})

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
                "RoPE scaling": spec.rope_scaling,
                "Watershed": spec.watershed,
                "Proportional attention": spec.proportional_attn,
                "CFG mode": spec.cfg_mode,
                "Class": spec.class_id,
                "Temperature": spec.temperature,
                "Top-k": spec.top_k,
                "Top-p": spec.top_p,
                "Version": f"studio {__version__}",
            },
        )

    def save(self, output: TaskOutput, spec: ImageSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        infotext = self.infotext(spec, card, output.used["sampler"])

        return save_all([png_writer(self.name, image, spec, card, ctx, output.used, infotext)
                         for image in output.items])


def sampler_name(pipeline: Any) -> str:
    cls = type(getattr(pipeline, "scheduler", None)).__name__
    return SAMPLER_NAMES.get(cls, cls)
