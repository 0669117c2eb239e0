"""Upscaling: one image made bigger by an upscaler model (the families that declare the task: ESRGAN).

The spec holds the image (a local file, as a video's start image is), the output scale (the model's
native one unless asked otherwise: any other is a final Lanczos resize), and the tile size and overlap
that bound the memory a job needs. Its prompt is derived ("upscale of <file name>"): it is what the
history shows and searches. The image's size is read from its header and refused before anything is
decoded when it or the output would be past the limits (`pixel_limits`). The output PNG keeps the
source's A1111 `parameters` text when it has one, with A1111's extras keys added
(`Postprocess upscaler`, `Postprocess upscale by`), and carries the job JSON as every output does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image
from pydantic import Field, model_validator

from .. import __version__
from ..errors import InvalidInput, MediaError
from ..media import MAX_DECODE_PIXELS, PARAMETERS_KEY, SavedFile, check_pixels, format_infotext, parse_infotext
from ..zoo.cards import ModelCard
from .base import JobContext, StepCallback, TaskOutput, TaskSpec, png_writer, run_family, save_all

MAX_SCALE = 8


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def pixel_limits(card: ModelCard) -> tuple[int, int]:
    """(most input pixels, most output pixels) for this upscaler: the input what the studio decodes at
    all, the output the card's `max_size` squared (and never past that either)."""
    return MAX_DECODE_PIXELS, min(MAX_DECODE_PIXELS, card.max_size ** 2)


def _open_checked(path: str | None, card: ModelCard, scale: float) -> Image.Image:
    """The image opened (its header read, nothing decoded), or InvalidInput saying what is wrong."""
    if not path:
        raise InvalidInput("add an image to upscale")
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"the image {file.name!r} is missing (upload it again)")
    try:
        im = Image.open(file)
    except Image.DecompressionBombError:
        raise InvalidInput(f"{file.name!r} has more pixels than the studio decodes: scale it down first") from None
    except Exception:
        raise InvalidInput(f"{file.name!r} is not an image the studio can read (use PNG, JPEG or WebP)") from None
    try:
        in_limit, out_limit = pixel_limits(card)
        check_pixels(*im.size, in_limit, f"the image {file.name!r}")
        # The network makes its native scale first (a smaller one is a resize after), so that is what must fit.
        made = max(scale, float(card.engine.get("scale", scale)))
        width, height = output_size(*im.size, made)
        if width * height > out_limit:
            side = int(out_limit ** 0.5)
            raise MediaError(f"{file.name!r} x{made:g} would be {width}x{height} ({width * height / 1e6:.0f} MP): "
                             f"{card.title} makes at most {out_limit / 1e6:.1f} MP (about {side}x{side}); "
                             "pick a smaller scale or a smaller image")
    except MediaError as err:
        im.close()
        raise InvalidInput(str(err)) from None
    return im


def load_source(path: str | None, card: ModelCard, scale: float) -> Image.Image:
    """The image to upscale, decoded as RGB, or InvalidInput (checked against the limits first)."""
    with _open_checked(path, card, scale) as im:
        try:
            return im.convert("RGB")
        except Exception:  # a header that reads but data that does not: cut or corrupt
            raise InvalidInput(f"{Path(str(path)).name!r} is damaged: its pixels cannot be read") from None


def source_parameters(path: str | None) -> str | None:
    """The source's A1111 `parameters` text (a PNG's text chunks before its pixels), or None."""
    try:
        with Image.open(str(path)) as im:
            text = im.info.get(PARAMETERS_KEY)
    except Exception:
        return None
    return text if isinstance(text, str) and text.strip() else None


class UpscaleSpec(TaskSpec):
    task: ClassVar[str] = "upscale"
    FALLBACKS: ClassVar[dict[str, Any]] = {"tile": 256, "tile_overlap": 32}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("negative_prompt", "image")
    INPUTS: ClassVar[tuple[str, ...]] = ("image",)
    NEEDS: ClassVar[tuple[str, ...]] = ("image",)
    # Input files the job queue keeps beside the outputs, so a re-run has them.
    FILES: ClassVar[tuple[str, ...]] = ("image",)

    image: str | None = None  # the picture to upscale: a local file path
    scale: float | None = Field(default=None, ge=1, le=MAX_SCALE, allow_inf_nan=False)  # None: the model's own
    tile: int | None = Field(default=None, ge=0, le=4096)  # input pixels per tile side; 0: the whole image at once
    tile_overlap: int | None = Field(default=None, ge=0, le=512)  # real pixels around each tile
    # What the history shows and searches: derived from the file's name (not an input).
    prompt: str = ""

    @model_validator(mode="before")
    @classmethod
    def _prompt_from_image(cls, data: Any) -> Any:
        if isinstance(data, dict) and not str(data.get("prompt") or "").strip():
            name = Path(str(data["image"])).name if data.get("image") else "an image"
            data = {**data, "prompt": f"upscale of {name}"}
        return data

    @classmethod
    def defaults_for(cls, card: ModelCard) -> dict[str, Any]:
        """The task's and card's values; the scale, unless the card sets one, is the model's native one."""
        values = super().defaults_for(card)
        if values.get("scale") is None and card.engine.get("scale"):
            values["scale"] = float(card.engine["scale"])
        return values

    def check_against(self, card: ModelCard) -> None:
        if 0 < self.tile < 16:
            raise InvalidInput(f"tile: {self.tile} px is too small to upscale (16 or more, or 0 for no tiles)")
        _open_checked(self.image, card, self.scale).close()


class UpscaleTask:
    name = "upscale"
    spec_type = UpscaleSpec

    def working_bytes(self, spec: UpscaleSpec, card: ModelCard) -> int:
        """Activations of one tile (its overlap included) at the output size: the tile, not the image."""
        try:
            with Image.open(str(spec.image)) as im:
                width, height = im.size
        except Exception:
            return 0  # the run says what is wrong with it
        if spec.tile:
            width, height = min(width, spec.tile), min(height, spec.tile)
        native = float(card.engine.get("scale", spec.scale))
        pixels = (width + 2 * spec.tile_overlap) * (height + 2 * spec.tile_overlap) * native ** 2
        return int(card.working_gb_per_mpx * pixels / 2**20 * 2**30)

    def run(self, pipeline: Any, spec: UpscaleSpec, card: ModelCard, on_step: StepCallback) -> TaskOutput:
        output = run_family(self.name, pipeline, spec, card, on_step)
        source = source_parameters(spec.image)
        return dataclasses.replace(output, used={**output.used, "source_parameters": source}) if source else output

    def infotext(self, spec: UpscaleSpec, card: ModelCard, size: tuple[int, int], source: str | None) -> str:
        """The source's parameters with A1111's extras keys added; without them, the job's own lines."""
        pairs = {"Postprocess upscaler": card.id, "Postprocess upscale by": f"{spec.scale:g}"}
        if source:
            line = format_infotext("", "", pairs).split("\n")[-1]
            joiner = ", " if parse_infotext(source).fields else "\n"
            return source.rstrip("\n") + joiner + line
        return format_infotext(spec.prompt, "", {**pairs, "Size": f"{size[0]}x{size[1]}",
                                                 "Version": f"studio {__version__}"})

    def save(self, output: TaskOutput, spec: UpscaleSpec, card: ModelCard, ctx: JobContext) -> list[SavedFile]:
        return save_all([png_writer(self.name, image, spec, card, ctx, output.used,
                                    self.infotext(spec, card, image.size, output.used.get("source_parameters")))
                         for image in output.items])
