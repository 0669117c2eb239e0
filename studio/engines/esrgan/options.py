"""What an upscaler card says about its model: the `engine:` section of a `family: upscaler` card
(torch-free, read when cards are): the weights file in the card's repo (safetensors, or a `.pth`
read as weights only) and the model's native scale, which is the job's scale unless it asks for another."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..card_files import check_fetched, plain_file_name, read_section

SCALES = (1, 2, 3, 4, 8)  # the native scales upscalers are published at


class UpscalerFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str  # e.g. RealESRGAN_x4plus.pth, as the official release names it
    scale: int = Field(ge=1, le=8)  # the model's own: checked against the file when it loads


def engine_options(card: Any) -> UpscalerFiles:
    """The card's `engine:` section; ValueError says what is wrong with it."""
    files = read_section(UpscalerFiles, card)
    plain_file_name(files.weights, ("safetensors", "pth", "pt"))
    if files.scale not in SCALES:
        made = ", ".join(map(str, SCALES))
        raise ValueError(f"engine: scale {files.scale} is not one upscalers are made at ({made})")
    check_fetched(card, files.weights)
    return files


def needed_files(card: Any) -> list[str]:
    return [engine_options(card).weights]
