"""A Wan-Fun card's pipeline from its folders: the transformer from the Fun repo itself (converted,
`convert.py`), umT5 + tokenizer + VAE and the CLIP image encoder + processor from the component
cards it requires (diffusers-format folders of the official Wan-AI repos), and VideoX-Fun's sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import ModelNotAvailable
from .convert import load_transformer
from .options import CAMERA, CONTROL, IN_CHANNELS, INPAINT, FunModel, engine_options


def fun_scheduler() -> Any:
    """VideoX-Fun's default sampler ("Flow" in examples/wan2.1_fun/predict_*.py): diffusers'
    FlowMatchEulerDiscreteScheduler built from wan_civitai.yaml's scheduler_kwargs, shift 5. (The
    scripts' `shift = 3` is read only by their UniPC and DPM++ samplers.) A job's shift replaces it."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0, use_dynamic_shifting=False,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096)


def _text_and_vae(folder: Path, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    encoder = UMT5EncoderModel.from_pretrained(folder / "text_encoder", dtype=dtype, use_safetensors=True).eval()
    # float32, as diffusers' Wan examples load it (the VAE is small; bf16 costs it detail).
    vae = AutoencoderKLWan.from_pretrained(folder / "vae", torch_dtype=torch.float32, use_safetensors=True).eval()
    return tokenizer, encoder, vae


def _image_encoder(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import CLIPImageProcessorPil, CLIPVisionModel

    encoder = CLIPVisionModel.from_pretrained(folder / "image_encoder", dtype=dtype, use_safetensors=True).eval()
    # The PIL backend named explicitly, so the preprocessing never depends on torchvision being installed.
    return encoder, CLIPImageProcessorPil.from_pretrained(folder / "image_processor")


def load_wan_fun(card: Any, folder: Path, required: dict[str, Path], dtype: torch.dtype) -> Any:
    files = engine_options(card)
    if not isinstance(files, FunModel):
        raise ModelNotAvailable(f"{card.title} is a component: it runs as part of a Wan-Fun model")
    transformer, fun, ref_conv, adapter = load_transformer(Path(folder), dtype, card.title)
    if (adapter is not None) != (card.pipeline == CAMERA):
        has = "has" if adapter is not None else "has no"
        raise ModelNotAvailable(f"{card.title}: its checkpoint {has} control_adapter (Control-Camera's camera "
                                f"adapter), but the card's pipeline is {card.pipeline}")
    if (ref_conv is not None) != files.reference_image:
        # The card's word decides what the Video tab offers; the file's must agree with it.
        has = "has" if ref_conv is not None else "has no"
        raise ModelNotAvailable(f"{card.title}: its checkpoint {has} ref_conv (V1.1 Control's reference image), "
                                f"but the card says reference_image: {str(files.reference_image).lower()}")
    if int(fun["in_dim"]) != IN_CHANNELS[card.pipeline]:
        kind = {INPAINT: "InP", CONTROL: "Control", CAMERA: "Control-Camera"}[card.pipeline]
        raise ModelNotAvailable(f"{card.title}: its config.json has in_dim {fun['in_dim']}, but a Fun {kind} "
                                f"transformer takes {IN_CHANNELS[card.pipeline]}")
    try:
        tokenizer, text_encoder, vae = _text_and_vae(required[files.text_and_vae], dtype)
        image_encoder, image_processor = _image_encoder(required[files.image_encoder], dtype)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"{card.title}: a component is missing or incomplete ({err}); download it again") \
            from None
    parts = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=fun_scheduler(),
                 transformer=transformer, image_encoder=image_encoder, image_processor=image_processor)
    from .pipeline import WanFunControlPipeline, WanFunInpaintPipeline

    if card.pipeline == INPAINT:
        pipeline = WanFunInpaintPipeline(**parts)
    else:
        pipeline = WanFunControlPipeline(**parts, ref_conv=ref_conv, control_adapter=adapter)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline
