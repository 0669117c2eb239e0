"""Image editing on the flow families: image to image, inpainting, outpainting and the hires fix, as pictures.

This module does the pixel side, torch-free, A1111's way: the start image resized to the job's size ("just
resize"); the mask (white or opaque: repaint) resized to it, its edge blurred by `mask_blur` px; for "Only
masked" (`inpaint_area="masked"`) the mask's bounding box plus `mask_padding` px, widened to the job's aspect
ratio, is cut out, redrawn at the job's size and pasted back; outpainting edge-fills the added borders and
inpaints them; at the end the input's own pixels are laid back over the result outside the blurred mask
(A1111's overlay), so they come back unchanged. The sampling side (where the flow starts, the masked blend at
every step) is each family's, through `engines/flow_edit.py`. `run_image` runs one Image job on a family's
`sample(spec, edit, on_step)`: text to image, an edit, or text to image then the hires fix's second pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageFilter

from ..errors import InvalidInput
from ..zoo.cards import ModelCard
from .base import StepCallback, TaskOutput
from .inputs import load_input_image

__all__ = ["Edit", "EditPlan", "check_inputs", "hires_size", "load_mask", "plan_edit", "run_image", "upscale"]


@dataclass(frozen=True)
class Edit:
    """What a family's sampler redraws: the start pictures at the size it samples (one, or one per image of
    the batch), how much (strength in (0, 1]), and where (an L mask at that size, 255 = repaint; None: all)."""

    images: list[Image.Image]
    strength: float
    mask: Image.Image | None = None


@dataclass(frozen=True)
class EditPlan:
    """An edit and how its result goes back: `canvas` is the output-size picture (input resized, outpainted
    borders edge-filled), `overlay` the blurred mask at that size (None: no overlay, plain img2img),
    `crop` the box of the canvas that was redrawn ("Only masked"; None: all of it)."""

    edit: Edit
    canvas: Image.Image
    overlay: Image.Image | None = None
    crop: tuple[int, int, int, int] | None = None
    notes: list[str] = field(default_factory=list)


def hires_size(width: int, height: int, scale: float, multiple: int = 16) -> tuple[int, int]:
    """The hires fix's target size: width and height times `scale`, each rounded to a multiple of 16."""
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def upscale_lanczos(image: Image.Image, scale: float, size: tuple[int, int]) -> Image.Image:
    return image.resize(size, Image.LANCZOS)


# The hires fix's upscalers by name: fn(image, scale, size) -> image at `size`. A learned upscaler plugs in here.
UPSCALERS: dict[str, Callable[[Image.Image, float, tuple[int, int]], Image.Image]] = {"Lanczos": upscale_lanczos}


def upscale(image: Image.Image, scale: float, size: tuple[int, int], upscaler: str = "Lanczos") -> Image.Image:
    return UPSCALERS[upscaler](image, scale, size)


def load_mask(path: str, card: ModelCard) -> Image.Image:
    """The mask as L (255 = repaint): its alpha where it has a real one (a brush layer), else its grey."""
    mask = load_input_image(path, card, "mask", mode=None)
    if mask.mode in ("RGBA", "LA", "PA") or (mask.mode == "P" and "transparency" in mask.info):
        alpha = mask.convert("RGBA").getchannel("A")
        if alpha.getextrema() != (255, 255):
            return alpha
    return mask.convert("L")


def check_inputs(spec: Any, card: ModelCard) -> None:
    """Refuse, at submit, a start image or mask that cannot be read (a strength that leaves no step of the
    family's grid is refused when the job runs: engines/flow_edit.py)."""
    load_input_image(spec.image, card)
    if spec.mask:
        mask = load_mask(spec.mask, card)
        if mask.getextrema()[1] == 0:
            raise InvalidInput("mask: it is all black, so nothing would be redrawn: paint (white) what to repaint")


def _blurred(mask: Image.Image, radius: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius else mask


def _outpainted(image: Image.Image, left: int, top: int, right: int, bottom: int) -> tuple[Image.Image, Image.Image]:
    """The image with its borders grown by edge fill, and the mask of the new borders (255)."""
    array = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="edge")
    mask = np.full(array.shape[:2], 255, dtype=np.uint8)
    mask[top:top + image.height, left:left + image.width] = 0
    return Image.fromarray(array), Image.fromarray(mask)


def _crop_box(mask: Image.Image, padding: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A1111's crop for "Only masked": the mask's bounding box plus `padding`, widened to the job's aspect
    ratio (about its centre, inside the picture)."""
    x0, y0, x1, y1 = mask.getbbox()
    x0, y0, x1, y1 = max(0, x0 - padding), max(0, y0 - padding), min(width, x1 + padding), min(height, y1 + padding)
    ratio = width / height
    w, h = x1 - x0, y1 - y0
    if w / h < ratio:  # too narrow: widen
        w = min(width, int(round(h * ratio)))
    else:
        h = min(height, int(round(w / ratio)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = int(min(max(0, round(cx - w / 2)), width - w))
    top = int(min(max(0, round(cy - h / 2)), height - h))
    return left, top, left + w, top + h


def plan_edit(spec: Any, card: ModelCard) -> EditPlan:
    """The start picture, mask and paste-back of an editing job (spec.image set)."""
    notes: list[str] = []
    image = load_input_image(spec.image, card).resize((spec.width, spec.height), Image.LANCZOS)
    mask = None
    if spec.mask:
        mask = load_mask(spec.mask, card)
        if mask.size != image.size and mask.size != load_input_image(spec.image, card).size:
            notes.append(f"mask {mask.width}x{mask.height} resized to the image")
        mask = mask.resize(image.size, Image.LANCZOS)
    left, top, right, bottom = spec.outpaints()
    if any((left, top, right, bottom)):
        image, border = _outpainted(image, left, top, right, bottom)
        if mask is not None:
            mask = Image.fromarray(np.maximum(np.asarray(border), np.pad(np.asarray(mask),
                                                                         ((top, bottom), (left, right)))))
        else:
            mask = border
        notes.append(f"outpainted {left}/{top}/{right}/{bottom} px (left/top/right/bottom), edge fill")
    if mask is None:
        return EditPlan(Edit([image], spec.strength), canvas=image, notes=notes)
    overlay = _blurred(mask, spec.mask_blur or 0)
    width, height = image.size
    if spec.inpaint_area == "masked" and mask.getbbox() is not None:
        box = _crop_box(mask, spec.mask_padding or 0, width, height)
        crop_image = image.crop(box).resize((width, height), Image.LANCZOS)
        crop_mask = overlay.crop(box).resize((width, height), Image.LANCZOS)
        notes.append(f"only masked: {box[2] - box[0]}x{box[3] - box[1]} at ({box[0]}, {box[1]}) redrawn at "
                     f"{width}x{height}")
        return EditPlan(Edit([crop_image], spec.strength, crop_mask), canvas=image, overlay=overlay, crop=box,
                        notes=notes)
    return EditPlan(Edit([image], spec.strength, overlay), canvas=image, overlay=overlay, notes=notes)


def finish(plan: EditPlan, result: Image.Image) -> Image.Image:
    """The sampled picture put back: pasted into its crop, the input's pixels laid over it outside the
    blurred mask (where the mask is 0 they are the input's exactly)."""
    if plan.overlay is None:
        return result
    if plan.crop is not None:
        x0, y0, x1, y1 = plan.crop
        full = plan.canvas.copy()
        full.paste(result.resize((x1 - x0, y1 - y0), Image.LANCZOS), (x0, y0))
        result = full
    return Image.composite(result.convert("RGB"), plan.canvas, plan.overlay)


Sample = Callable[[Any, "Edit | None", StepCallback], TaskOutput]


def run_image(spec: Any, card: ModelCard, on_step: StepCallback, sample: Sample) -> TaskOutput:
    """One Image job on a family's `sample`: text to image, an edit (spec.image) or the hires fix."""
    if spec.image:
        plan = plan_edit(spec, card)
        width, height = plan.canvas.size
        output = sample(spec.model_copy(update={"width": width, "height": height}), plan.edit, on_step)
        items = [finish(plan, image) for image in output.items]
        kind = "inpaint" if plan.overlay is not None else "img2img"
        used = {**output.used, "edit": kind, "strength": spec.strength, **({"notes": plan.notes} if plan.notes else {}),
                "infotext": {**(output.used.get("infotext") or {}), "Denoising strength": spec.strength,
                             **({"Mask blur": spec.mask_blur} if plan.overlay is not None else {}),
                             **({"Inpaint area": "Only masked", "Masked area padding": spec.mask_padding}
                                if plan.crop is not None else {})}}
        return TaskOutput(items=items, used=used)
    first = sample(spec, None, on_step)
    if (spec.hires_scale or 1) == 1:
        return first
    size = hires_size(spec.width, spec.height, spec.hires_scale)
    upscaled = [upscale(image, spec.hires_scale, size) for image in first.items]
    second = sample(spec.model_copy(update={"width": size[0], "height": size[1], "steps": spec.hires_steps}),
                    Edit(upscaled, spec.hires_strength), on_step)
    used = {**second.used, "first_pass": {k: v for k, v in first.used.items() if k != "infotext"},
            "hires": {"size": f"{size[0]}x{size[1]}", "resize": "Lanczos"},
            "infotext": {**(second.used.get("infotext") or {}), "Hires upscale": spec.hires_scale,
                         "Hires steps": spec.hires_steps, "Hires upscaler": "Lanczos",
                         "Denoising strength": spec.hires_strength}}
    return TaskOutput(items=second.items, used=used)
