"""What a LlamaGen model card says about its model: the `engine:` section of a `pipeline: llamagen` card.

The official releases are bare `.pt` files with no config beside them, so the card names the files
and the architecture: which GPT size (the original's GPT_models names), which VQ tokenizer, class-
or text-conditional, and for text the card of its text encoder. The image size (one fixed size per
checkpoint) is the card's own `max_size`, which must equal its `min_size`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from ..card_files import check_fetched, plain_file_name, read_section

# name -> (n_layer, n_head, dim), as in the original's GPT_models; n_kv_head is never set there.
GPT_CONFIGS: dict[str, tuple[int, int, int]] = {
    "B": (12, 12, 768),
    "L": (24, 16, 1024),
    "XL": (36, 20, 1280),
    "XXL": (48, 24, 1536),
    "XXXL": (48, 40, 2560),
    "1B": (22, 32, 2048),
    "3B": (24, 32, 3200),
    "7B": (32, 32, 4096),
}
TINY = "tiny"  # the built-in test model's size, for both the GPT and the VQ
# Pixels per image token of each VQ (vq.downsample_factor of vq16_config() and tiny_vq_config()).
VQ_DOWNSAMPLE = {"vq16": 16, TINY: 4}


class LlamaGenFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["c2i", "t2i"]  # class-conditional (ImageNet) or text-conditional
    gpt_file: str
    gpt_size: str  # "B", "L", "XL", "XXL", "XXXL", "1B", "3B", "7B", or "tiny"
    vq_file: str
    vq_size: Literal["vq16", "tiny"] = "vq16"
    text_encoder: str | None = None  # t2i: the id of the text encoder's card (flan-t5-xl)

    @field_validator("gpt_file", "vq_file")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        return plain_file_name(value, ("pt", "pth", "bin", "safetensors"))

    @field_validator("gpt_size")
    @classmethod
    def _known_size(cls, value: str) -> str:
        if value != TINY and value.upper() not in GPT_CONFIGS:
            raise ValueError(f"unknown LlamaGen GPT size {value!r}; known: {', '.join(GPT_CONFIGS)}, {TINY}")
        return value if value == TINY else value.upper()

    @model_validator(mode="after")
    def _text_encoder_for_text(self) -> "LlamaGenFiles":
        if self.kind == "t2i" and not self.text_encoder:
            raise ValueError("a text-conditional (t2i) model needs `text_encoder`: the id of its text encoder's card")
        if self.kind == "c2i" and self.text_encoder:
            raise ValueError("a class-conditional (c2i) model takes no text encoder")
        return self


def needed_files(card: Any) -> list[str]:
    """The files in the card's own snapshot that loading it reads."""
    files = engine_options(card)
    return [files.gpt_file, files.vq_file]


def engine_options(card: Any) -> LlamaGenFiles:
    """The card's `engine:` section as LlamaGenFiles; ValueError says what is wrong with it."""
    files = read_section(LlamaGenFiles, card)
    if card.min_size != card.max_size:
        raise ValueError("a LlamaGen checkpoint makes one size: set min_size and max_size to it")
    if card.max_size % VQ_DOWNSAMPLE[files.vq_size]:
        raise ValueError(f"max_size {card.max_size} is not a whole number of {VQ_DOWNSAMPLE[files.vq_size]}-pixel "
                         "image tokens")
    for name in (files.gpt_file, files.vq_file):
        check_fetched(card, name)
    if files.text_encoder and files.text_encoder not in card.requires:
        raise ValueError(f"list the text encoder's card in `requires` ([{files.text_encoder}]) so it is downloaded too")
    return files
