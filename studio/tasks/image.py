"""Text-to-image: prompt, negative prompt, size, steps, CFG, seed and images per prompt; whatever
else a model takes (Lumina-Next's solver, LlamaGen's temperature…) its family declares and runs
(studio.families). Outputs are PNGs with the A1111 `parameters` chunk and the full job JSON.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from .. import __version__
from ..errors import InvalidInput
from ..families.shared_options import IMAGE_EDITING
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


# The editing fields (studio/tasks/image_edit.py): a flow family takes them by listing them in `Family.inputs`.
EDITING = IMAGE_EDITING
OUTPAINT = ("outpaint_left", "outpaint_top", "outpaint_right", "outpaint_bottom")
MASKING = ("mask_blur", "inpaint_area", "mask_padding")  # how a mask (or an outpainted border) is used
HIRES = ("hires_scale", "hires_strength", "hires_steps")
# What needs a start image, and what it is.
NEEDS_IMAGE = {"strength": "it says how much of the start image is redrawn", "mask": "it says what of the start "
               "image is redrawn", **{name: "it extends the start image" for name in OUTPAINT}}
PIXELS = Field(default=None, ge=0, le=2048)


class ImageSpec(TaskSpec):
    task: ClassVar[str] = "image"
    # A1111's: denoising strength 0.75, mask blur 4, "only masked" padding 32; hires fix off (scale 1), its
    # strength 0.5 and, unset, as many steps as the first pass.
    FALLBACKS: ClassVar[dict[str, Any]] = {"width": 1024, "height": 1024, "steps": 30, "cfg": 4.0, "strength": 0.75,
                                           "mask_blur": 4, "inpaint_area": "whole", "mask_padding": 32,
                                           "hires_scale": 1.0, "hires_strength": 0.5}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "steps", "loras", *EDITING)
    INPUTS: ClassVar[tuple[str, ...]] = ("loras", *EDITING)  # brought, not settings (LoRAs: tasks/loras.py)
    OPT_IN: ClassVar[tuple[str, ...]] = EDITING
    FILES: ClassVar[tuple[str, ...]] = ("image", "mask")
    REFUSALS: ClassVar[dict[str, str]] = {
        "image": "image: {title} makes pictures from text only; it takes no start image (image to image and "
                 "inpainting run on Lumina-Next, Lumina-Image 2.0 and Lumina-T2I)",
        "mask": "mask: {title} takes no inpainting mask",
        "hires_scale": "hires_scale: {title} has no hires fix (it runs on Lumina-Next, Lumina-Image 2.0 and "
                       "Lumina-T2I)",
    }

    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    cfg: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    num_images: int = Field(default=1, ge=1, le=8)
    loras: Loras = None  # [{"name", "weight"}]: LoRA adapters loaded for this job only
    image: str | None = None  # start image (img2img, inpainting, outpainting): a local file path
    strength: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)  # how much of it is redrawn
    mask: str | None = None  # what is redrawn: white / opaque repaint, black / transparent keep; a file path
    mask_blur: int | None = Field(default=None, ge=0, le=64)  # px, of the mask's edge
    inpaint_area: Literal["whole", "masked"] | None = None  # "masked": A1111's "Only masked"
    mask_padding: int | None = Field(default=None, ge=0, le=1024)  # px around the mask for "masked"
    outpaint_left: int | None = PIXELS  # px added on each side of the start image, then inpainted
    outpaint_top: int | None = PIXELS
    outpaint_right: int | None = PIXELS
    outpaint_bottom: int | None = PIXELS
    hires_scale: float | None = Field(default=None, ge=1, le=4, allow_inf_nan=False)  # 1: off
    hires_strength: float | None = Field(default=None, gt=0, le=1, allow_inf_nan=False)
    hires_steps: int | None = Field(default=None, ge=1, le=1000)  # unset: as many as the first pass

    def resolved(self, card: ModelCard) -> "ImageSpec":
        """As TaskSpec.resolved, then: an editing field with nothing to act on refused (a strength without a
        start image), and the editing defaults left out of a job that does not edit (so a text-to-image job
        records what it always did)."""
        spec = super().resolved(card)
        for name, why in NEEDS_IMAGE.items():
            if getattr(self, name) is not None and not self.image:
                raise InvalidInput(f"{name}: give a start image (image) too: {why}")
        for name in ("hires_strength", "hires_steps"):
            if getattr(self, name) is not None and (self.hires_scale or 1) == 1:
                raise InvalidInput(f"{name}: set hires_scale above 1 too: it is the hires fix's second pass")
        idle: dict[str, Any] = {}
        if not spec.image:
            idle.update(dict.fromkeys(("strength", *OUTPAINT, "mask"), None))
        if not spec.image or not (spec.mask or spec.outpaints()):
            idle.update(dict.fromkeys(MASKING, None))
        if (spec.hires_scale or 1) == 1:
            idle.update(dict.fromkeys(HIRES, None))
        elif spec.hires_steps is None:
            idle["hires_steps"] = spec.steps
        return spec.model_copy(update=idle) if idle else spec

    def outpaints(self) -> tuple[int, int, int, int]:
        """The pixels added on the left, top, right and bottom (0 each when not outpainting)."""
        return tuple(int(getattr(self, name) or 0) for name in OUTPAINT)  # type: ignore[return-value]

    def output_size(self) -> tuple[int, int]:
        """The size of the pictures the job saves: its size, outpainted borders added, hires-scaled."""
        left, top, right, bottom = self.outpaints()
        width, height = self.width + left + right, self.height + top + bottom
        if (self.hires_scale or 1) != 1:
            from .image_edit import hires_size

            return hires_size(width, height, self.hires_scale)
        return width, height

    def check_against(self, card: ModelCard) -> None:
        width, height = self.output_size()
        problem = card.size_problem(width, height)
        if problem:
            raise InvalidInput(f"Size {width}x{height} is not possible: {problem}")
        if self.image and "image" in self.takes(card):
            from .image_edit import check_inputs

            check_inputs(self, card)
        if (self.hires_scale or 1) != 1 and self.image:
            raise InvalidInput("hires_scale: the hires fix upscales a text-to-image result; with a start image, "
                               "set the size you want and use image to image")


# Above this many pixels the VAE decodes in tiles: its activations grow with the image, the weights don't.
VAE_TILING_PIXELS = 1536 * 1536


class ImageTask:
    name = "image"
    spec_type = ImageSpec

    def working_bytes(self, spec: ImageSpec, card: ModelCard) -> int:
        """Activation memory the job needs besides the weights: it grows with pixels and batch."""
        width, height = spec.output_size()
        megapixels = width * height * spec.num_images / 2**20
        return int(card.working_gb_per_mpx * megapixels * 2**30)

    def run(self, pipeline: Any, spec: ImageSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        self._set_vae_memory_mode(pipeline, spec)
        return run_family(self.name, pipeline, spec, card, on_step)

    @staticmethod
    def _set_vae_memory_mode(pipeline: Any, spec: ImageSpec) -> None:
        vae = getattr(pipeline, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        width, height = spec.output_size()
        if width * height > VAE_TILING_PIXELS:
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


def run_diffusers_image(pipeline: Any, spec: ImageSpec, on_step: StepCallback, edit: Any = None) -> TaskOutput:
    """A diffusers text-to-image pipeline's own call (its scheduler, its loop), with the job's fields.
    `edit` (a start image: Lumina-Image 2.0's image to image and inpainting) is made into the call's
    latents, sigmas and step blend by engines/lumina2_flow.edit_call."""
    shift = spec.option("shift")
    # The scheduler as loaded, remembered on the pipeline: each job's is rebuilt from it, so one job's shift
    # never leaks into the next (a job that leaves the shift unset gets the scheduler's own).
    cls, loaded = pipeline.__dict__.setdefault("_studio_scheduler",
                                               (type(pipeline.scheduler), pipeline.scheduler.config))
    if shift is not None:
        pipeline.scheduler = cls.from_config(loaded, shift=shift)
    elif pipeline.scheduler.config != loaded:
        pipeline.scheduler = cls.from_config(loaded)

    extra: dict[str, Any] = {}
    blend, total = None, spec.steps
    if edit is not None:
        from ..engines.lumina2_flow import edit_call

        call, blend, total = edit_call(pipeline, edit, spec.width, spec.height, spec.steps,
                                       seeded_generators(spec.seed, spec.num_images))
        extra.update(call)

    def step_end(_pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
        on_step(index + 1, total)
        if blend is not None:
            tensors["latents"] = blend(index, tensors["latents"])
        preview.offer(index + 1, total, tensors["latents"], getattr(pipeline, "vae", None))  # the state x_t
        return tensors

    if "clean_caption" in inspect.signature(pipeline.__call__).parameters:
        # Caption cleaning needs bs4/ftfy and rewrites the prompt; Lumina's own code never does it.
        extra["clean_caption"] = False
    result = pipeline(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        width=spec.width,
        height=spec.height,
        num_inference_steps=total,
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
