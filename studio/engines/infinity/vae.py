"""Infinity's BSQ VAE, decoder half (infinity/models/bsq_vae/flux_vqgan.py): summed multi-scale bit
codes (B, d, h, w) -> an image in [-1, 1], 16 pixels per code.

A Flux-style conv decoder with no attention (cnn_attention='no'): conv_in, two mid ResNet blocks,
five levels of three ResNet blocks with nearest x2 upsampling + conv on the top four, GroupNorm(32,
eps 1e-6), swish. The released files are `{"vae": state_dict}` (or `{"ema": ...}`) with the encoder
too, which is not built here. The reference wraps every conv and GroupNorm (`x.conv.weight`,
`x.norm.weight`); some files have the plain names (`x.weight`), which its loader maps: both load.

Bits become codes as BSQ's `indices_to_codes` does: (2b - 1), L2-normalised, i.e. +-1/sqrt(d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VAEConfig:
    codebook_dim: int = 32
    base_ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2
    patch_size: int = 16


def bits_to_codes(bits: torch.Tensor) -> torch.Tensor:
    """Bit labels (..., d) in {0, 1} -> BSQ codes (..., d) on the unit sphere."""
    codes = bits.float() * 2 - 1
    return codes / math.sqrt(codes.shape[-1])


class Conv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Normalize(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = 32 if channels % 32 == 0 else 24  # the reference's choice; other widths it refuses
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = Normalize(cin), Conv(cin, cout)
        self.norm2, self.conv2 = Normalize(cout), Conv(cout, cout)
        self.nin_shortcut = Conv(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        levels = len(c.ch_mult)
        ups = int(math.log2(c.patch_size))
        block_in = c.base_ch * c.ch_mult[-1]
        self.conv_in = Conv(c.codebook_dim, block_in)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.block_2 = ResnetBlock(block_in, block_in), ResnetBlock(block_in, block_in)
        up_levels: list[nn.Module] = []
        for level in reversed(range(levels)):
            up = nn.Module()
            block_out = c.base_ch * c.ch_mult[level]
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out))
                block_in = block_out
            up.block = nn.ModuleList(blocks)
            if 1 <= level <= ups:
                up.upsample = Upsample(block_in)
            up_levels.insert(0, up)  # up[0] is the finest level, as in the checkpoints
        self.up = nn.ModuleList(up_levels)
        self.norm_out = Normalize(block_in)
        self.conv_out = Conv(block_in, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.block_1(self.conv_in(z)))
        for level in reversed(range(len(self.up))):
            for block in self.up[level].block:
                h = block(h)
            if hasattr(self.up[level], "upsample"):
                h = self.up[level].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class BSQDecoder(nn.Module):
    """The VAE as the pipeline uses it: `decoder.*` weights under the official names."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = Decoder(config)

    def forward(self, summed_codes: torch.Tensor) -> torch.Tensor:
        """(B, d, h, w) codes -> (B, 3, 16h, 16w) in [-1, 1]."""
        weight = self.decoder.conv_in.conv.weight
        return self.decoder(summed_codes.to(weight.dtype)).float().clamp(-1, 1)


class VAECheckpointError(ValueError):
    """The file is not a BSQ VAE this decoder can take; the message says what it holds."""


_WRAPPERS = {"conv_in", "conv1", "conv2", "nin_shortcut", "conv", "conv_out", "norm1", "norm2", "norm_out"}


def official_name(key: str) -> str:
    """`decoder.x.norm1.weight` -> `decoder.x.norm1.norm.weight` (and `.conv.` likewise); names
    that already have the wrapper's infix are kept."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-2] in ("conv", "norm") and parts[-3] in _WRAPPERS:
        return key
    if len(parts) >= 2 and parts[-2] in _WRAPPERS:
        infix = "norm" if parts[-2].startswith("norm") else "conv"
        return ".".join([*parts[:-1], infix, parts[-1]])
    return key


def decoder_state(raw: Any, name: str) -> dict[str, torch.Tensor]:
    """The `decoder.*` weights of a VAE checkpoint, under this module's names."""
    if not isinstance(raw, Mapping):
        raise VAECheckpointError(f"{name} holds a {type(raw).__name__}, not a BSQ VAE checkpoint")
    state = raw.get("vae", raw.get("ema"))
    if not isinstance(state, Mapping):
        held = ", ".join(sorted(map(str, raw))[:6])
        hint = " (it looks like an Infinity transformer)" if "word_embed.weight" in raw else ""
        raise VAECheckpointError(f"{name} is not an Infinity BSQ VAE file: it has no 'vae' weights, only "
                                 f"{held or 'nothing'}{hint}")
    return {official_name(k): v for k, v in state.items() if k.startswith("decoder.") and isinstance(v, torch.Tensor)}


def read_vae_config(state: Mapping[str, torch.Tensor], name: str) -> VAEConfig:
    """The decoder's shape, from its weights: code width, base width, level widths, upsamplings."""
    conv_in = state.get("decoder.conv_in.conv.weight")
    if conv_in is None:
        raise VAECheckpointError(f"{name} has no decoder weights (decoder.conv_in): not a BSQ VAE")
    try:
        levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("decoder.up.")})
        widths = [state[f"decoder.up.{i}.block.0.conv1.conv.weight"].shape[0] for i in levels]
        blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("decoder.up.0.block."))
    except (KeyError, ValueError, IndexError):
        raise VAECheckpointError(f"{name} has an incomplete decoder (its up-blocks are missing)") from None
    base = widths[0]
    return VAEConfig(codebook_dim=conv_in.shape[1], base_ch=base, ch_mult=tuple(w // base for w in widths),
                     num_res_blocks=blocks - 1,
                     patch_size=2 ** sum(f"decoder.up.{i}.upsample.conv.conv.weight" in state for i in levels))


def read_vae(path: Path) -> tuple[VAEConfig, dict[str, torch.Tensor]]:
    """Config and decoder weights of an official `infinity_vae_*.pth`, read with weights_only=True."""
    raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    state = decoder_state(raw, path.name)
    return read_vae_config(state, path.name), state


def load_vae_decoder(path: Path, dtype: torch.dtype = torch.float32) -> BSQDecoder:
    config, state = read_vae(path)
    with torch.device("meta"):
        vae = BSQDecoder(config)
    try:
        vae.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise VAECheckpointError(f"{path.name} does not fit a BSQ VAE decoder: {err}") from None
    return vae.to(dtype).eval()
