"""LlamaGen as one pipeline: encode the caption (text models), sample image tokens with the GPT,
decode them with the VQ tokenizer, and hand back pictures.

`load_llamagen` builds it from a card: the GPT and VQ configs come from the card's `engine:` section
(the official files carry no config), the weights from the official `.pt` files in the card's
snapshot folder (read with weights_only=True), and for text models the flan-t5 encoder from the
snapshot of the card it requires.

Captions go through flan-t5 as LlamaGen's sampler sends them: lower-cased, 120 tokens padded to
the right by the tokenizer, then moved to the left ("left padding": the valid tokens end where the
image tokens begin) with the mask moved along and the padding rows zeroed. LlamaGen's T5Embedder
also runs DeepFloyd's caption cleaner (it needs bs4 and ftfy, and strips markup, URLs and CJK
characters); the studio keeps the prompt as written, as its other pipelines do.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from ...errors import ModelNotAvailable
from ..bundle import ModuleBundle
from .gpt import GPT, GPTConfig, load_state_dict_from_file
from .options import TINY, LlamaGenFiles, engine_options
from .sampling import generate
from .vq import decode_tokens, downsample_factor, load_vq_decoder, tiny_vq_config, vq16_config

log = logging.getLogger(__name__)

# The built-in tiny models: ImageNet's 1000 classes (so the class picker applies), a 32-wide tiny
# flan-t5, and 16 caption tokens instead of 120 (its toy tokenizer spends one token per letter).
TINY_GPT: dict[str, Any] = {"num_classes": 1000, "caption_dim": 32}
TINY_CAPTION_TOKENS = 16


def vq_config(files: LlamaGenFiles):
    return tiny_vq_config() if files.vq_size == TINY else vq16_config()


def gpt_config(files: LlamaGenFiles, image_size: int) -> GPTConfig:
    """The GPT a card describes: its size, kind, and a token grid of image_size / the VQ's downsampling."""
    vq = vq_config(files)
    grid = image_size // downsample_factor(vq)
    common: dict[str, Any] = {"block_size": grid * grid, "vocab_size": vq.num_embeddings}
    if files.gpt_size == TINY:
        if files.kind == "t2i":
            common.update(cls_token_num=TINY_CAPTION_TOKENS, caption_token_num=TINY_CAPTION_TOKENS)
        return GPTConfig.tiny(files.kind, **TINY_GPT, **common)
    return GPTConfig.named(files.gpt_size, files.kind, **common)


class TokenDecoder(nn.Module):
    """The VQ model with decoding as its forward: offload hooks wrap forward, so the codebook lookup
    and the decoder run wherever the hooks put the model."""

    # Block-level group offload: split the decoder's up-blocks into groups rather than onloading it whole.
    _group_offload_block_modules = ["vq", "decoder"]

    def __init__(self, vq: nn.Module, grid: int) -> None:
        super().__init__()
        self.vq = vq
        self.grid = grid

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return decode_tokens(self.vq, tokens, (self.grid, self.grid))


ProgressCallback = Callable[[int, int], None]


class LlamaGenPipeline(ModuleBundle):
    """Components in the order they run (text encoder, GPT, decoder), for chained model offload."""

    def __init__(self, gpt: GPT, decoder: TokenDecoder, text_encoder: nn.Module | None = None,
                 tokenizer: Any = None) -> None:
        text = {"text_encoder": text_encoder, "tokenizer": tokenizer} if text_encoder is not None else {}
        super().__init__(**text, gpt=gpt, decoder=decoder)

    @property
    def kind(self) -> str:
        return self.gpt.config.model_type

    @property
    def grid(self) -> int:
        return self.gpt.config.grid_size

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """flan-t5 features (B, T, C) and mask (B, T), left-padded as LlamaGen's sample_t2i.py does."""
        length = self.gpt.config.cls_token_num
        batch = self.tokenizer([p.lower().strip() for p in prompts], max_length=length, padding="max_length",
                               truncation=True, return_attention_mask=True, add_special_tokens=True,
                               return_tensors="pt")
        device = self.device
        mask = batch.attention_mask.to(device)
        features = self.text_encoder(input_ids=batch.input_ids.to(device), attention_mask=mask).last_hidden_state
        shifted = torch.stack([torch.cat([row[int(n):], row[:int(n)]]) for row, n in zip(features, mask.sum(-1))])
        left_mask = mask.flip(-1)
        return shifted * left_mask[:, :, None], left_mask

    @torch.no_grad()
    def __call__(self, *, class_ids: list[int] | None = None, prompts: list[str] | None = None,
                 cfg_scale: float = 4.0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 on_progress: ProgressCallback | None = None) -> list[Image.Image]:
        """One picture per class id (c2i) or prompt (t2i); `generator` may be one per picture.
        `on_progress(rows_done, rows)` after each row of image tokens."""
        gpt = self.gpt
        gpt.execution_device = self.execution_device
        masks = None
        if self.kind == "c2i":
            if not class_ids:
                raise ValueError("a class-conditional LlamaGen model needs class ids")
            cond = torch.tensor(class_ids, dtype=torch.long)
        else:
            if not prompts:
                raise ValueError("a text-conditional LlamaGen model needs prompts")
            cond, masks = self.encode_prompts(prompts)
            cond = cond.to(gpt.dtype)
        grid = self.grid

        def on_token(done: int, total: int) -> None:
            if on_progress is not None and done % grid == 0:
                on_progress(done // grid, total // grid)

        try:
            tokens = generate(gpt, cond, gpt.config.block_size, cfg_scale=cfg_scale, temperature=temperature,
                              top_k=top_k, top_p=top_p, generator=generator, on_token=on_token, emb_masks=masks)
            pixels = self.decoder(tokens)
        finally:
            self.offload_all()
        # As torchvision's save_image, which LlamaGen's samplers use: x * 255 + 0.5, clamped, truncated.
        array = (pixels.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
        return [Image.fromarray(np.ascontiguousarray(a)) for a in array]


def _read_gpt(path: Path, config: GPTConfig, title: str, dtype: torch.dtype) -> GPT:
    if not path.is_file():
        raise ModelNotAvailable(f"{path.name} is not in the model cache; download {title} first.")
    try:
        state = load_state_dict_from_file(path)
    except ModelNotAvailable:
        raise
    except pickle.UnpicklingError as err:
        raise ModelNotAvailable(f"{path.name} holds Python objects besides tensors and is not loaded for safety "
                                "(torch.load with weights_only=True refused it). Re-save its weights, e.g. as "
                                "safetensors.") from err
    except Exception as err:  # a truncated, empty or foreign file: torch says it in many ways
        raise ModelNotAvailable(f"cannot read {path.name} (damaged or incomplete download?): {err}. Remove "
                                f"{title} in the Models tab and download it again.") from err
    with torch.device("meta"):
        gpt = GPT(config)
    try:
        gpt.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        size = f"{config.n_layer} layers x {config.dim}, {config.model_type}, {config.block_size} image tokens"
        raise ModelNotAvailable(f"{path.name} does not fit the GPT its card describes ({size}): {err}") from None
    gpt.freqs_cis = gpt._rope_table()  # built on the meta device above
    return gpt.to(dtype).eval()


def _read_text_encoder(folder: Path, config: GPTConfig, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer, T5EncoderModel

    try:
        encoder = T5EncoderModel.from_pretrained(folder, use_safetensors=True, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"the text encoder in {folder} cannot be loaded: {err}") from err
    if encoder.config.d_model != config.caption_dim:
        raise ModelNotAvailable(f"the text encoder's features are {encoder.config.d_model} wide; this LlamaGen "
                                f"model takes {config.caption_dim}")
    return encoder.eval(), tokenizer


def load_llamagen(card: Any, folder: Path, required: dict[str, Path], dtype: torch.dtype) -> LlamaGenPipeline:
    """The card's LlamaGen, its GPT in `dtype`, its VQ in float32 (as the original samplers run it)."""
    files = engine_options(card)
    config = gpt_config(files, card.max_size)
    gpt = _read_gpt(folder / files.gpt_file, config, card.title, dtype)
    vq = load_vq_decoder(folder / files.vq_file, vq_config(files))
    text_encoder = tokenizer = None
    if files.kind == "t2i":
        text_encoder, tokenizer = _read_text_encoder(required[files.text_encoder], config, dtype)
    return LlamaGenPipeline(gpt, TokenDecoder(vq, config.grid_size), text_encoder, tokenizer)
