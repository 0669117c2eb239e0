"""What a Lumina-T2Audio / T2Music card says about its model: the `engine:` section of a
`pipeline: lumina-audio` card (torch-free).

Alpha-VLLM/Lumina-T2Audio holds the Lightning checkpoint `audio_generation/324.ckpt` (the DiT, the
whole mel VAE and the text encoders' weights under `cond_stage_model.*`), `bigvgan/{best_netG.pt,
args.yml}` (the vocoder), `maa2/maa2.ckpt` and `CLAP/`. Lumina-T2Music: `music_generation/*.ckpt`
and `bigvnat/`. Inference reads the checkpoint and the vocoder folder only:

- `maa2/maa2.ckpt` is the VAE's `first_stage_config.ckpt_path`: the reference loads it while it
  builds the model, and `load_model_from_config` then loads the main checkpoint's state dict over it
  (`first_stage_model.*` included), so the VAE that decodes is the main checkpoint's. A checkpoint
  without `first_stage_model.decoder.*` is refused by name (checkpoint.split_state_dict).
- `CLAP/CLAP_weights_2022.pth` is read by FrozenCLAPFLANEmbedder's constructor, which never loads
  the parameters it builds from it: CLAP's weights too come from the main checkpoint.

The text encoders' tokenizers are not in those repos: they are component cards of this family
(`tasks: [component]`, `engine: {tokenizer: bert|t5, file: ...}`) holding only tokenizer files of
bert-base-uncased, google/t5-v1_1-large (T2Audio) and google/flan-t5-large (T2Music), which the
model card requires. The DiT's and the VAE's sizes are not in the checkpoint (the reference reads
them from its yaml): the released ones unless the card's `dit:` / `vae:` say otherwise (the tiny
models do).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from ..card_files import check_fetched, read_section

VOCODER_FILES = ("best_netG.pt", "args.yml")
DIT_FIELDS = ("in_channels", "context_dim", "hidden_size", "depth", "num_heads", "max_len")
VAE_FIELDS = ("embed_dim", "z_channels", "out_ch", "ch", "ch_mult", "num_res_blocks", "attn_layers", "down_layers",
              "kernel_size")
_NAME = re.compile(r"^[\w][\w.-]{0,127}$")


def _path(value: str, suffixes: tuple[str, ...] = ()) -> str:
    """A file or folder name in the snapshot, at most one folder deep, never `..`."""
    parts = value.split("/")
    if len(parts) > 2 or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise ValueError(f"{value!r} must be a name in the model's repo (a file or folder/file)")
    if suffixes and not value.endswith(suffixes):
        raise ValueError(f"{value!r} must end with {' or '.join(suffixes)}")
    return value


def _sizes(value: dict, fields: tuple[str, ...], what: str) -> dict:
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ValueError(f"{what} has no {', '.join(unknown)} (it takes {', '.join(fields)})")
    for key, v in value.items():
        items = v if isinstance(v, list) else [v]
        if not items and key not in ("attn_layers", "down_layers") or \
                not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items):
            raise ValueError(f"{what}.{key} must be a whole number (or a list of them), not {v!r}")
    return value


class ModelFiles(BaseModel):
    """A T2Audio or T2Music model: the checkpoint, the vocoder folder, the tokenizers' cards."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str  # the Lightning .ckpt (a pickle: read with weights_only and a numpy allow-list)
    vocoder: str  # the BigVGAN folder: best_netG.pt + args.yml
    latent_length: int = 312  # demo_*.py's W: the latent's frames (x2 by the VAE, x hop by BigVGAN)
    bert_tokenizer: str | None = None  # T2Audio: bert-base-uncased's tokenizer card (CLAP's text branch)
    t5_tokenizer: str  # T2Audio: t5-v1_1-large's; T2Music: flan-t5-large's
    dit: dict[str, Any] = {}
    vae: dict[str, Any] = {}

    _ckpt = field_validator("checkpoint")(classmethod(lambda cls, v: _path(v, (".ckpt",))))
    _folder = field_validator("vocoder")(classmethod(lambda cls, v: _path(v)))
    _dit = field_validator("dit")(classmethod(lambda cls, v: _sizes(v, DIT_FIELDS, "dit")))
    _vae = field_validator("vae")(classmethod(lambda cls, v: _sizes(v, VAE_FIELDS, "vae")))

    @field_validator("latent_length")
    @classmethod
    def _length(cls, value: int) -> int:
        if not 1 <= value <= 1000:  # FlagDiTv2's max_len (its RoPE table)
            raise ValueError("must be 1 to 1000 latent frames")
        return value

    @property
    def tokenizer_cards(self) -> list[str]:
        return [c for c in (self.bert_tokenizer, self.t5_tokenizer) if c]


class TokenizerFiles(BaseModel):
    """A component card: one text encoder's tokenizer files (the weights are in the model's checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tokenizer: Literal["bert", "t5"]
    file: str  # the file whose presence means the tokenizer is downloaded (vocab.txt, spiece.model, ...)

    _file = field_validator("file")(classmethod(lambda cls, v: _path(v)))


def is_component(card: Any) -> bool:
    return "component" in card.tasks


def engine_options(card: Any) -> ModelFiles | TokenizerFiles:
    """The card's `engine:` section; ValueError says what is wrong with it."""
    model = TokenizerFiles if is_component(card) else ModelFiles
    files = read_section(model, card)
    for name in needed(files):
        check_fetched(card, name)
    if isinstance(files, ModelFiles):
        audio = "audio" in card.tasks
        if audio and not files.bert_tokenizer:
            raise ValueError("engine: a Lumina-T2Audio card names its bert_tokenizer card (CLAP's text branch)")
        if not audio and files.bert_tokenizer:
            raise ValueError("engine: Lumina-T2Music has no CLAP text branch: leave bert_tokenizer out")
        for needed_card in files.tokenizer_cards:
            if needed_card not in card.requires:
                raise ValueError(f"list {needed_card} in `requires` so a download fetches it too")
    return files


def needed(files: ModelFiles | TokenizerFiles) -> list[str]:
    if isinstance(files, TokenizerFiles):
        return [files.file]
    return [files.checkpoint, *(f"{files.vocoder}/{name}" for name in VOCODER_FILES)]


def needed_files(card: Any) -> list[str]:
    """The files in the card's own snapshot that loading it reads."""
    return needed(engine_options(card))


def model_seconds(card: Any) -> float | None:
    """The one clip length the card's model makes (its `defaults: seconds`)."""
    seconds = card.defaults.get("seconds")
    return float(seconds) if seconds is not None else None
