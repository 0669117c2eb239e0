"""LlamaGen's VQ-16 image tokenizer, decoded with transformers' `JanusVQVAE`.

LlamaGen's `VQModel` (tokenizer/tokenizer_image/vq_model.py) and transformers' `JanusVQVAE` are the
same network: the taming-transformers encoder/decoder (GroupNorm(32, eps 1e-6), swish, ResNet blocks,
single-head conv attention at the lowest resolution only, nearest-neighbour 2x upsampling followed by
a 3x3 conv), a codebook looked up with l2-normalised entries, and 1x1 `quant_conv` /
`post_quant_conv`. Only the parameter names differ, so this module keeps the model code
transformers' and holds what LlamaGen needs on top of it: the VQ-16 config, the rename from the
official checkpoint's names, a loader that checks every decoder weight arrived, and decoding of
token grids of any shape into images.

Only decoding is supported. `JanusVQVAE.encode` does not l2-normalise z before the nearest-codebook
search as LlamaGen's quantizer does, so its tokens would differ from LlamaGen's; do not use it to
tokenize images for a LlamaGen GPT.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import JanusVQVAE, JanusVQVAEConfig

from studio.errors import ModelNotAvailable

log = logging.getLogger(__name__)

__all__ = [
    "VQCheckpointError",
    "decode_tokens",
    "decoder_side",
    "downsample_factor",
    "load_vq_decoder",
    "lookup_codes",
    "official_key_map",
    "tiny_vq_config",
    "vq16_config",
]

# LlamaGen's ModelArgs defaults with VQ_16's channel multipliers, in JanusVQVAEConfig's field names:
#   codebook_size 16384         -> num_embeddings
#   codebook_embed_dim 8        -> embed_dim
#   z_channels 256              -> latent_channels (encoder.conv_out / post_quant_conv width)
#   Encoder/Decoder ch=128      -> base_channels (a constructor default there, not in ModelArgs)
#   {en,de}coder_ch_mult        -> channel_multiplier (LlamaGen allows two lists; VQ_16 uses the same)
#   num_res_blocks=2            -> num_res_blocks (decoder levels hold num_res_blocks + 1 blocks in both)
#   dropout_p 0.0               -> dropout
#   in_channels 3 / out_channels 3, encoder outputs z_channels (not 2x) -> double_latent False
#   codebook_l2_norm True       -> no field: JanusVQVAE's get_codebook_entry always l2-normalises,
#                                  and `lookup_codes` below does the same
#   norm_type "group"           -> no field: Janus always uses GroupNorm(32, eps=1e-6)
# Janus-only fields, irrelevant for decoding here:
#   num_patches: only sizes the square grid of JanusVQVAE.decode / get_codebook_entry, which this
#     module bypasses (set to 16 = 256 px / 16, LlamaGen's 256 px grid, for completeness);
#   projection_dim, num_hidden_layers, hidden_act, image_token_embed_dim: Janus's generation aligner
#     and head (JanusVQVAEAlignerMLP / JanusVQVAEHead), which live in JanusModel, not in JanusVQVAE,
#     so they add no parameters here;
#   initializer_range: random init only (every decoder weight is overwritten by the checkpoint).
VQ16_DEFAULTS: dict[str, Any] = {
    "embed_dim": 8,
    "num_embeddings": 16384,
    "latent_channels": 256,
    "base_channels": 128,
    "channel_multiplier": [1, 1, 2, 2, 4],
    "num_res_blocks": 2,
    "dropout": 0.0,
    "double_latent": False,
    "in_channels": 3,
    "out_channels": 3,
    "num_patches": 16,
}

# A VQ-16-shaped model small enough for tests: 3 levels (downsample 4), channels a multiple of 32
# (GroupNorm uses 32 groups), attention at the lowest level, a 64-entry codebook of 4-dim codes.
TINY_DEFAULTS: dict[str, Any] = {
    **VQ16_DEFAULTS,
    "embed_dim": 4,
    "num_embeddings": 64,
    "latent_channels": 32,
    "base_channels": 32,
    "channel_multiplier": [1, 1, 2],
    "num_res_blocks": 1,
    "num_patches": 4,
}

# JanusVQVAEConfig accepts unknown keyword arguments silently; a misspelt override must not.
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(JanusVQVAEConfig))

# What decoding needs; everything else (encoder.*, quant_conv.*) may be absent from a file.
DECODER_PREFIXES = ("quantize.", "post_quant_conv.", "decoder.")

# Keys of the official file that have no counterpart and no use in decoding.
DROPPED_KEYS = frozenset(
    {
        # LlamaGen's VectorQuantizer registers a 65536-long ring buffer of recently used code ids
        # (codebook_show_usage=True) to report codebook usage while training.
        "quantize.codebook_used",
    }
)

# Official name <-> Janus name: each pair is (official prefix, Janus prefix), "#" standing for a block
# or layer index that carries over. LlamaGen builds `conv_blocks` in the same order as Janus builds
# `up` (decoder: from the lowest resolution, i.e. reversed levels, appended) and `down` (encoder: from
# the highest), and both run them in list order, so block indices carry over unchanged.
_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    ("decoder.conv_blocks.#.res.#.", "decoder.up.#.block.#."),
    ("decoder.conv_blocks.#.attn.#.", "decoder.up.#.attn.#."),
    ("decoder.conv_blocks.#.upsample.conv.", "decoder.up.#.upsample.conv."),
    ("encoder.conv_blocks.#.res.#.", "encoder.down.#.block.#."),
    ("encoder.conv_blocks.#.attn.#.", "encoder.down.#.attn.#."),
    ("encoder.conv_blocks.#.downsample.conv.", "encoder.down.#.downsample.conv."),
    # The middle is an nn.ModuleList [ResnetBlock, AttnBlock, ResnetBlock] in LlamaGen and named
    # attributes in Janus's JanusVQVAEMidBlock.
    *((f"{side}.mid.{i}.", f"{side}.mid.{name}.") for side in ("encoder", "decoder")
      for i, name in enumerate(("block_1", "attn_1", "block_2")))
)
# Everything else keeps its name: {en,de}coder.conv_in / norm_out / conv_out, quant_conv,
# post_quant_conv, quantize.embedding.weight, and the leaf names inside blocks (norm1, conv1, norm2,
# conv2, nin_shortcut; norm, q, k, v, proj_out; conv).


def _rules(backwards: bool) -> tuple[tuple[re.Pattern[str], str], ...]:
    """Prefix rewrites from official names to Janus's (or back): (pattern, replacement) pairs."""
    def pattern(prefix: str) -> re.Pattern[str]:
        return re.compile("^" + re.escape(prefix).replace("\\#", "#").replace("#", r"(\d+)"))

    def replacement(prefix: str) -> str:
        parts = prefix.split("#")
        return "".join(part + (f"\\{n + 1}" if n < len(parts) - 1 else "") for n, part in enumerate(parts))

    return tuple((pattern(new if backwards else old), replacement(old if backwards else new))
                 for old, new in _NAME_PAIRS)


_RULES = _rules(backwards=False)  # official -> JanusVQVAE
_INVERSE_RULES = _rules(backwards=True)  # JanusVQVAE -> official (to write files in the official layout)


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for rule, replacement in rules:
        new, hits = rule.subn(replacement, key, count=1)
        if hits:
            return new
    return key


class VQCheckpointError(ModelNotAvailable):
    """A VQ checkpoint file that cannot be read or does not fit the VQ config."""


def vq16_config(**overrides: Any) -> JanusVQVAEConfig:
    """The architecture of LlamaGen's official VQ-16 tokenizer (vq_ds16_c2i.pt / vq_ds16_t2i.pt)."""
    return _config(VQ16_DEFAULTS, overrides)


def tiny_vq_config(**overrides: Any) -> JanusVQVAEConfig:
    """A tiny VQ of the same architecture, for offline tests and built-in models."""
    return _config(TINY_DEFAULTS, overrides)


def _config(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> JanusVQVAEConfig:
    unknown = sorted(set(overrides) - _CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown JanusVQVAEConfig field(s): {', '.join(unknown)}")
    values = {**defaults, **overrides}
    values["channel_multiplier"] = list(values["channel_multiplier"])
    return JanusVQVAEConfig(**values)


def downsample_factor(config: JanusVQVAEConfig) -> int:
    """Pixels per token along each side (16 for VQ-16): one 2x step between consecutive levels."""
    return 2 ** (len(config.channel_multiplier) - 1)


def decoder_side(key: str) -> bool:
    """Whether a JanusVQVAE parameter name is needed to decode tokens."""
    return key.startswith(DECODER_PREFIXES)


def official_key_map(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official LlamaGen VQ state dict to JanusVQVAE's parameter names.

    The quantizer codebook, post_quant_conv and decoder are mapped fully; so are the encoder and
    quant_conv (same rules), though decoding does not need them. `quantize.codebook_used` (a
    training statistic) is dropped. Keys that match no rule keep their name, so a foreign key
    surfaces as unexpected when loading instead of vanishing here.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in DROPPED_KEYS:
            continue
        new = _rename(key, _RULES)
        if new in mapped:
            raise VQCheckpointError(f"the VQ checkpoint maps two keys onto {new!r}; is it a LlamaGen VQ file?")
        mapped[new] = value
    return mapped


def to_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A JanusVQVAE state dict under the official LlamaGen names (what the built-in tiny model's file holds)."""
    return {_rename(key, _INVERSE_RULES): value for key, value in state_dict.items()}


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a VQ checkpoint: a .safetensors file, a .pt/.pth/.bin file, or a mapping.

    A torch file is read with weights_only=True, and a {"model": ...} or {"state_dict": ...}
    container (LlamaGen's own checkpoints hold the weights under "model") is unwrapped.
    """
    if isinstance(source, Mapping):
        data: Any = source
    else:
        path = Path(source)
        if not path.is_file():
            raise VQCheckpointError(f"VQ checkpoint not found: {path}; download the model first.")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                data = load_file(str(path), device="cpu")
            else:
                data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise VQCheckpointError(
                f"{path} holds Python objects besides tensors and is not loaded for safety "
                "(torch.load with weights_only=True refused it). Re-save just its weights, e.g. as safetensors."
            ) from err
        except Exception as err:
            raise VQCheckpointError(f"cannot read the VQ checkpoint {path}: {err}") from err
    if not isinstance(data, Mapping):
        raise VQCheckpointError(f"the VQ checkpoint holds a {type(data).__name__}, not a state dict")
    for container in ("model", "state_dict"):
        if isinstance(data.get(container), Mapping):
            data = data[container]
            break
    not_tensors = sorted(str(k) for k, v in data.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise VQCheckpointError(
            f"the VQ checkpoint is not a state dict: {', '.join(not_tensors[:5])} are not tensors"
        )
    return dict(data)


def load_vq_decoder(source: str | Path | Mapping[str, Any], config: JanusVQVAEConfig) -> JanusVQVAE:
    """A JanusVQVAE in eval mode holding the official checkpoint's codebook, post_quant_conv and decoder.

    Raises `VQCheckpointError` (naming the keys) when a decoder-side weight is missing, the file
    holds a key the model does not have, or a shape does not fit `config`. Encoder weights are
    loaded when present and otherwise left at their random init (decoding does not use them).
    """
    mapped = official_key_map(read_state_dict(source))
    vq = JanusVQVAE(config)
    expected = vq.state_dict()

    unexpected = sorted(set(mapped) - set(expected))
    missing = sorted(k for k in expected if k not in mapped and decoder_side(k))
    wrong_shape = sorted(
        f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
        for k, v in mapped.items()
        if k in expected and v.shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing decoder weights: {_some(missing)}")
    if unexpected:
        problems.append(f"keys the VQ model does not have: {_some(unexpected)}")
    if wrong_shape:
        problems.append(f"shapes that do not fit the config: {_some(wrong_shape)}")
    if problems:
        raise VQCheckpointError(
            "the VQ checkpoint does not fit LlamaGen's VQ architecture "
            f"(codebook {config.num_embeddings}x{config.embed_dim}, channels "
            f"{config.base_channels}x{list(config.channel_multiplier)}): " + "; ".join(problems)
        )

    result = vq.load_state_dict(mapped, strict=False)
    absent = [k for k in result.missing_keys if not decoder_side(k)]
    if absent:
        log.info("VQ checkpoint has no encoder weights (%d tensors); decoding does not need them", len(absent))
    return vq.eval()


def _some(items: list[str], limit: int = 8) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def lookup_codes(vq: JanusVQVAE, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Codebook vectors for a token grid, (B, h*w) -> (B, embed_dim, h, w), row-major as LlamaGen.

    LlamaGen's `get_codebook_entry` (codebook_l2_norm=True) l2-normalises the whole codebook and
    then indexes it; Janus's indexes and then normalises each looked-up row, which gives the same
    numbers, but it reshapes to a fixed square `num_patches` grid. Doing the lookup here lets any
    grid (16x16 for 256 px, 24x24 for 384 px, non-square) decode without touching the config.
    """
    height, width = grid
    if tokens.dim() != 2 or tokens.shape[1] != height * width:
        raise ValueError(
            f"expected tokens of shape (batch, {height * width}) for a {height}x{width} grid, got {tuple(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise ValueError(f"tokens must be integer codebook ids, got {tokens.dtype}")
    size = vq.quantize.embedding.num_embeddings
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= size):
        raise ValueError(f"token ids must lie in [0, {size}), got {int(tokens.min())}..{int(tokens.max())}")
    codebook = F.normalize(vq.quantize.embedding.weight, p=2, dim=-1)
    codes = codebook[tokens.long()]  # (B, h*w, C)
    return codes.view(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def decode_tokens(vq: JanusVQVAE, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Images in [0, 1], (B, 3, h*f, w*f), from LlamaGen token ids (B, h*w), f = downsample_factor.

    Matches LlamaGen's `decode_code` followed by its samplers' mapping of [-1, 1] to [0, 1]
    (torchvision save_image(normalize=True, value_range=(-1, 1)) clamps, then rescales).
    """
    weight = vq.post_quant_conv.weight
    codes = lookup_codes(vq, tokens.to(weight.device), grid).to(weight.dtype)
    pixels = vq.decoder(vq.post_quant_conv(codes))
    return ((pixels.float().clamp(-1.0, 1.0) + 1.0) / 2.0)
