"""What an Infinity model card says about its model: the `engine:` section of a `pipeline: infinity` card.

The released checkpoints are bare state dicts with no config beside them. A transformer card names
its file, the reference's model_type (depth, width, heads), its pixel budget (which scale schedule
and sizes), and the cards of its BSQ VAE and text encoder, with the VAE's file in that card's
snapshot. A VAE card (tasks: [component]) names its file and its code width. Torch-free.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ..card_files import check_fetched, plain_file_name, read_section
from .schedules import BUDGETS, size_names

MODEL_TYPES = ("infinity_2b", "infinity_8b", "infinity_layer12", "infinity_layer16", "infinity_layer24", "tiny")


def _plain(value: str) -> str:
    return plain_file_name(value, ("pt", "pth"))


class TransformerFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: Literal[MODEL_TYPES]  # type: ignore[valid-type]
    file: str
    pn: Literal[tuple(BUDGETS)]  # type: ignore[valid-type]
    vae: str  # the VAE card's id
    vae_file: str  # its file, in that card's snapshot
    text_encoder: str  # the flan-t5 card's id

    _names = field_validator("file", "vae_file")(classmethod(lambda cls, v: _plain(v)))


class VAEFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    vae_file: str
    codebook_dim: int

    _names = field_validator("vae_file")(classmethod(lambda cls, v: _plain(v)))


def is_vae_card(card: Any) -> bool:
    return "component" in card.tasks


def engine_options(card: Any) -> TransformerFiles | VAEFiles:
    """The card's `engine:` section; ValueError says what is wrong with it."""
    if is_vae_card(card):
        files = read_section(VAEFiles, card)
        check_fetched(card, files.vae_file)
        return files
    files = read_section(TransformerFiles, card)
    check_fetched(card, files.file)
    for needed in (files.vae, files.text_encoder):
        if needed not in card.requires:
            raise ValueError(f"list {needed} in `requires` so a download fetches it too")
    expected = size_names(files.pn)
    if sorted(card.resolutions) != sorted(expected):
        raise ValueError(f"resolutions must be the {files.pn} sizes of Infinity's aspect-ratio templates: "
                         f"{', '.join(expected)}")
    sides = [int(v) for size in expected for v in size.split("x")]
    if (card.min_size, card.max_size) != (min(sides), max(sides)) or card.size_multiple != 16:
        raise ValueError(f"set size_multiple 16, min_size {min(sides)} and max_size {max(sides)} "
                         f"(the {files.pn} sizes)")
    return files


def needed_files(card: Any) -> list[str]:
    """The files in the card's own snapshot that loading it reads."""
    files = engine_options(card)
    return [files.vae_file] if isinstance(files, VAEFiles) else [files.file]
