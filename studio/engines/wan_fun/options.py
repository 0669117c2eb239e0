"""What a Wan-Fun card says about its files (torch-free): the `engine:` section of a `wan-fun-*` card.

A model card (`pipeline: wan-fun-inp`, `wan-fun-control` or `wan-fun-camera`) names the two component cards it loads
besides its own transformer: `text_and_vae` (umT5-XXL, its tokenizer and the Wan VAE, in diffusers
format: Wan-AI/Wan2.1-T2V-1.3B-Diffusers) and `image_encoder` (the CLIP ViT-H/14 image encoder and
its processor: Wan-AI/Wan2.1-I2V-14B-480P-Diffusers). A component card (`pipeline: wan-fun`,
tasks: [component]) says which of the two it is. Every file named is one the card's download fetches.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..card_files import check_fetched, read_section

INPAINT, CONTROL, CAMERA, COMPONENT = "wan-fun-inp", "wan-fun-control", "wan-fun-camera", "wan-fun"
PIPELINES = (INPAINT, CONTROL, CAMERA, COMPONENT)
# The transformer in VideoX-Fun's "civitai" layout (config/wan2.1/wan_civitai.yaml: transformer_subpath ./).
TRANSFORMER_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
# What each component's folders must hold once downloaded (the sharded weights come with them).
COMPONENT_FILES = {
    "text_and_vae": ("text_encoder/config.json", "tokenizer/tokenizer_config.json", "vae/config.json",
                     "vae/diffusion_pytorch_model.safetensors"),
    "image_encoder": ("image_encoder/config.json", "image_processor/preprocessor_config.json"),
}
# Input channels of the transformer per kind: InP 16 noise + 4 mask + 16 masked-video latents;
# Control 16 noise + 16 control-video latents + 16 start-image latents (first latent frame only);
# Control-Camera 16 noise + 16 start-image latents (VideoX-Fun's camera branch has no control latents:
# the camera enters through control_adapter, added to the patch embeddings).
IN_CHANNELS = {INPAINT: 36, CONTROL: 48, CAMERA: 32}


class FunModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    text_and_vae: str  # the component card holding text_encoder/, tokenizer/ and vae/
    image_encoder: str  # the component card holding image_encoder/ and image_processor/
    # V1.1 Control: the checkpoint has `ref_conv` (its config.json `add_ref_conv`), so it takes a reference image.
    reference_image: bool = False


class FunComponent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    component: Literal["text_and_vae", "image_encoder"]


def engine_options(card: Any) -> FunModel | FunComponent | None:
    """The card's `engine:` section (None for the family's diffusers cards); ValueError says what is wrong."""
    if card.library != "native":
        return None
    if card.pipeline not in PIPELINES:
        raise ValueError(f"pipeline: a native Wan card is one of {', '.join(PIPELINES)}, not {card.pipeline!r}")
    component = card.pipeline == COMPONENT
    if component != ("component" in card.tasks):
        raise ValueError("pipeline: wan-fun is for component cards (tasks: [component]) only")
    files = read_section(FunComponent if component else FunModel, card)
    for name in needed(files):
        check_fetched(card, name)
    if isinstance(files, FunModel):
        if files.reference_image and card.pipeline not in (CONTROL, CAMERA):
            raise ValueError("engine: reference_image: only a Fun Control checkpoint (V1.1) takes a reference image")
        for needed_card in (files.text_and_vae, files.image_encoder):
            if needed_card not in card.requires:
                raise ValueError(f"list {needed_card} in `requires` so a download fetches it too")
    return files


def needed(files: FunModel | FunComponent) -> list[str]:
    return list(TRANSFORMER_FILES if isinstance(files, FunModel) else COMPONENT_FILES[files.component])


def check_card(card: Any) -> None:
    engine_options(card)


def needed_files(card: Any) -> list[str]:
    """The files in the card's own snapshot that loading it reads."""
    files = engine_options(card)
    return needed(files) if files is not None else []
