"""The Image tab's "Image to image / Inpaint" section and its hires fix: widgets, and their values as job fields.

Shown only for models that take a start image (the flow families: `Family.inputs`). The start image fills
the tab's size (rounded to what the model takes); the mask is drawn with a brush in Gradio's ImageEditor over
the start image (its layers' alpha made into a mask PNG here, server-side) or uploaded. Nothing of the section
is sent without a start image, and the hires fix only when its scale is above 1; the defaults shown are the
card's (ImageSpec.FALLBACKS), as for every other field.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from ..tasks.image import ImageSpec
from ..zoo.cards import ModelCard

__all__ = ["EditPanel", "editor_mask", "fitted_size"]

MASK_FOLDER = Path(tempfile.gettempdir()) / "studio-masks"


def fitted_size(width: int, height: int, card: ModelCard) -> str:
    """An uploaded picture's size as the model takes it: each side rounded to its multiple, within its bounds."""
    m = card.size_multiple

    def side(value: int) -> int:
        return int(min(card.max_size, max(card.min_size, round(value / m) * m)))

    return f"{side(width)}x{side(height)}"


def editor_mask(value: Any) -> str | None:
    """The brush strokes of an ImageEditor value as a mask PNG (255 where any layer is painted), or None."""
    if not isinstance(value, dict):
        return None
    painted = None
    for layer in value.get("layers") or []:
        array = np.asarray(Image.open(layer).convert("RGBA") if isinstance(layer, str) else layer)
        if array.ndim != 3 or array.shape[2] < 4:
            continue
        alpha = array[..., 3] > 0
        painted = alpha if painted is None else (painted | alpha)
    if painted is None or not painted.any():
        return None
    data = (painted * 255).astype(np.uint8)
    MASK_FOLDER.mkdir(parents=True, exist_ok=True)
    path = MASK_FOLDER / f"{hashlib.sha256(data.tobytes() + bytes(str(data.shape), 'ascii')).hexdigest()[:16]}.png"
    if not path.exists():
        Image.fromarray(data, "L").save(path)
    return str(path)


class EditPanel:
    """The section's widgets (placed by `place`) and what they send."""

    def __init__(self, card: ModelCard | None) -> None:
        self.values = ImageSpec.defaults_for(card) if card is not None else dict(ImageSpec.FALLBACKS)
        self.taken = card is not None and "image" in ImageSpec.takes(card)

    def place(self) -> None:
        v = self.values
        with gr.Accordion("Image to image / Inpaint", open=False, visible=self.taken,
                          elem_id="image-edit") as self.section:
            self.image = gr.Image(type="filepath", label="Start image", elem_id="image-init", height=240)
            self.strength = gr.Slider(0.01, 1.0, value=v.get("strength", 0.75), step=0.01,
                                      label="Denoising strength (1 = from noise)", elem_id="image-strength")
            self.editor = gr.ImageEditor(label="Paint what to repaint", type="numpy", elem_id="image-mask-editor",
                                         brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False,
                                         transforms=(), sources=(), height=320)
            self.mask = gr.Image(type="filepath", image_mode=None, label="…or upload a mask (white = repaint)",
                                 elem_id="image-mask", height=160)
            with gr.Row():
                self.mask_blur = gr.Slider(0, 64, value=v.get("mask_blur", 4), step=1, label="Mask blur (px)")
                self.only_masked = gr.Checkbox(value=v.get("inpaint_area") == "masked", label="Only masked",
                                               elem_id="image-only-masked")
                self.padding = gr.Slider(0, 256, value=v.get("mask_padding", 32), step=4,
                                         label="Only masked padding (px)")
            with gr.Row():
                self.outpaint = [gr.Number(value=0, precision=0, minimum=0, label=f"Outpaint {side} (px)",
                                           elem_id=f"image-outpaint-{side}")
                                 for side in ("left", "top", "right", "bottom")]
        with gr.Accordion("Hires fix", open=False, visible=self.taken, elem_id="image-hires") as self.hires_section:
            with gr.Row():
                self.hires_scale = gr.Slider(1.0, 4.0, value=v.get("hires_scale", 1.0), step=0.25,
                                             label="Upscale by (1 = off)", elem_id="image-hires-scale")
                self.hires_strength = gr.Slider(0.01, 1.0, value=v.get("hires_strength", 0.5), step=0.01,
                                                label="Hires denoising strength")
                self.hires_steps = gr.Number(value=0, precision=0, minimum=0, label="Hires steps (0 = as Steps)")

    @property
    def components(self) -> list[Any]:
        return [self.image, self.strength, self.editor, self.mask, self.mask_blur, self.only_masked, self.padding,
                *self.outpaint, self.hires_scale, self.hires_strength, self.hires_steps]

    @property
    def fields(self) -> dict[str, Any]:
        """Job fields shown as they are (a past job's start image and strength fill back)."""
        return {"image": self.image, "strength": self.strength, "mask": self.mask, "mask_blur": self.mask_blur,
                "mask_padding": self.padding, "hires_scale": self.hires_scale, "hires_strength": self.hires_strength}

    def params(self, values: list[Any]) -> dict[str, Any]:
        """The section's values as job fields: none without a start image (but the hires fix's)."""
        if len(values) < len(self.components):
            return {}
        (image, strength, editor, mask, blur, only_masked, padding, left, top, right, bottom, scale, h_strength,
         h_steps) = values
        out: dict[str, Any] = {}
        if scale and float(scale) > 1:
            out.update(hires_scale=float(scale), hires_strength=h_strength)
            if h_steps:
                out["hires_steps"] = int(h_steps)
        if not image:
            return out
        out.update(image=image, strength=strength)
        sides = {"outpaint_left": left, "outpaint_top": top, "outpaint_right": right, "outpaint_bottom": bottom}
        out.update({k: int(v) for k, v in sides.items() if v})
        mask = editor_mask(editor) or mask
        if mask or any(sides.values()):
            if mask:
                out["mask"] = mask
            out.update(mask_blur=int(blur), inpaint_area="masked" if only_masked else "whole",
                       mask_padding=int(padding))
        return out

    def updates(self, card: ModelCard) -> dict[Any, Any]:
        taken = "image" in ImageSpec.takes(card)
        return {self.section: gr.update(visible=taken), self.hires_section: gr.update(visible=taken)}

    @property
    def outputs(self) -> list[Any]:
        return [self.section, self.hires_section]

    def wire(self, size: gr.Dropdown, model: gr.Dropdown, card_of: Any) -> None:
        """A start image fills the mask editor's background and the tab's size."""
        def on_image(path: str | None, model_id: str | None):
            if not path:
                return None, gr.update()
            card = card_of(model_id)
            with Image.open(path) as im:
                width, height = im.size
            fitted = fitted_size(width, height, card) if card is not None else f"{width}x{height}"
            return {"background": path, "layers": [], "composite": path}, gr.update(value=fitted)

        self.image.change(on_image, [self.image, model], [self.editor, size], api_visibility="private")

    def send(self, path: str | None) -> dict[Any, Any]:
        """Updates that put `path` in as the start image (Send to img2img / inpaint), the hires fix off (it
        upscales a text-to-image result and refuses a start image)."""
        return {self.image: path, self.section: gr.update(open=True), self.hires_scale: 1.0}
