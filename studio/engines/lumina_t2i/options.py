"""What a Lumina-T2I card says about its model: the `engine:` section of a `pipeline: lumina-t2i` card.

Alpha-VLLM/Lumina-T2I holds the Flag-DiT's weights (`consolidated.00-of-01.safetensors`, also as a
`.pth` pickle a card never fetches) and `model_args.pth`, the training run's arguments (which model,
qk_norm, the native size, the VAE). The text encoder (LLaMA-2-7B) and the VAE (SDXL's) live in
other repos: they are cards the model card requires. The VAE card is a component of this family
(tasks: [component]) holding a diffusers AutoencoderKL folder. Torch-free.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from ..card_files import check_fetched, plain_file_name, read_section

VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")  # a diffusers AutoencoderKL folder


def _plain(value: str) -> str:
    return plain_file_name(value, ("safetensors", "pth"))


class DiTFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str  # the Flag-DiT state dict, safetensors
    model_args: str  # the training arguments, a pickled SimpleNamespace
    text_encoder: str  # the LLaMA card's id
    vae: str  # the VAE card's id

    _names = field_validator("weights", "model_args")(classmethod(lambda cls, v: _plain(v)))

    @field_validator("weights")
    @classmethod
    def _safetensors(cls, value: str) -> str:
        if not value.endswith(".safetensors"):
            raise ValueError("the weights must be the .safetensors file (the .pth copy is a pickle, never loaded)")
        return value


class VAEFolder(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_component(card: Any) -> bool:
    return "component" in card.tasks


def engine_options(card: Any) -> DiTFiles | VAEFolder:
    """The card's `engine:` section; ValueError says what is wrong with it."""
    model = VAEFolder if is_component(card) else DiTFiles
    files = read_section(model, card)
    for name in needed(files):
        check_fetched(card, name)
    if isinstance(files, DiTFiles):
        for needed_card in (files.text_encoder, files.vae):
            if needed_card not in card.requires:
                raise ValueError(f"list {needed_card} in `requires` so a download fetches it too")
    return files


def needed(files: DiTFiles | VAEFolder) -> list[str]:
    return [files.weights, files.model_args] if isinstance(files, DiTFiles) else list(VAE_FILES)


def needed_files(card: Any) -> list[str]:
    """The files in the card's own snapshot that loading it reads."""
    return needed(engine_options(card))
