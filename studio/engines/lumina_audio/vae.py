"""The 1-D mel VAE's decoder of Lumina-T2Audio / T2Music (Make-An-Audio-2's AutoencoderKL), in one file.

The reference is Alpha-VLLM/Lumina-T2X `lumina_audio/models/autoencoder1d.py` (`AutoencoderKL`,
`Decoder1D`, `ResnetBlock1D`, `AttnBlock1D`, `Upsample1D`; `lumina_music/` differs in import
paths only), built from `first_stage_config` in both configs: embed_dim 20, z_channels 20, 80 mel
bins, ch 384, ch_mult [1, 2, 4], 2 res blocks, attn_layers [3], down_layers [0], kernel_size 5.

What those settings make of the decoder:
- A latent (B, 20, T) becomes a log-mel spectrogram (B, 80, 2T): `post_quant_conv` (1x1, 20 -> 20),
  `conv_in` (kernel 5, 20 -> 1536), the middle (res block, self-attention over time, res block),
  then three levels from the widest, 1536, 768, 384, of num_res_blocks + 1 = 3 res blocks each;
  `down_layers` [0] becomes the decoder's [1], so the level at index 1 ends with a nearest x2
  upsample and a 3-wide conv. Then GroupNorm, swish and `conv_out` (kernel 5, 384 -> 80).
- The res blocks' convs are 3 wide, not 5: Decoder1D does not hand its kernel_size to them
  (the encoder does). Their shortcut is a 1x1 `nin_shortcut` where the width changes.
- attn_layers [3] names no level (there are three, 0..2), so the only attention is the middle's.
  Its logits are scaled by channels^-0.5 (the reference's variable is misnamed `t`).
- GroupNorm has 32 groups and eps 1e-6; there is no timestep embedding (temb_channels 0).

In the Lightning checkpoint the VAE sits under `first_stage_model.` (`decoder.*`,
`post_quant_conv.*`; the encoder, `quant_conv` and the loss are not needed to sample). Sampled
latents are divided by the checkpoint's scale_factor before decoding (sampling.unscale).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CHECKPOINT_PREFIX = "first_stage_model."


@dataclass(frozen=True)
class VAEConfig:
    """`first_stage_config.params` (embed_dim) and its ddconfig; the defaults are the released VAE's."""

    embed_dim: int = 20
    z_channels: int = 20
    out_ch: int = 80
    ch: int = 384
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    attn_layers: tuple[int, ...] = (3,)
    down_layers: tuple[int, ...] = (0,)
    kernel_size: int = 5

    @property
    def upsample_levels(self) -> tuple[int, ...]:
        """Decoder1D's `down_layers`: each encoder down layer's index plus one."""
        return tuple(i + 1 for i in self.down_layers)


def swish(x: torch.Tensor) -> torch.Tensor:
    """The reference's `nonlinearity`, x * sigmoid(x) as written (F.silu may round differently)."""
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock1D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=kernel_size // 2)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv1d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))  # dropout 0.0
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock1D(nn.Module):
    """Single-head self-attention over the time axis, with 1x1 convs for q, k, v and the output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv1d(channels, channels, kernel_size=1)
        self.k = nn.Conv1d(channels, channels, kernel_size=1)
        self.v = nn.Conv1d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)  # (B, C, T)
        # The reference's products in its order (SDPA gives the same to ~1e-6, not bit for bit); the
        # (B, T, T) weights are small at the released lengths (624 mel frames in the middle block).
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * (int(q.shape[1]) ** (-0.5)), dim=2)
        return x + self.proj_out(torch.bmm(v, weights.transpose(1, 2)))


class Upsample1D(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock1D(channels, channels)
        self.attn_1 = AttnBlock1D(channels)
        self.block_2 = ResnetBlock1D(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One of the decoder's `up` levels: res blocks, attention after each where configured, upsample."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int, attention: bool, upsample: bool) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock1D(in_channels if i == 0 else out_channels, out_channels)
                                   for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock1D(out_channels) for _ in range(blocks if attention else 0))
        if upsample:
            self.upsample = Upsample1D(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        if hasattr(self, "upsample"):
            x = self.upsample(x)
        return x


class Decoder1D(nn.Module):
    def __init__(self, c: VAEConfig) -> None:
        super().__init__()
        levels = len(c.ch_mult)
        block_in = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv1d(c.z_channels, block_in, c.kernel_size, padding=c.kernel_size // 2)
        self.mid = Mid(block_in)
        up = {}
        for i in reversed(range(levels)):
            block_out = c.ch * c.ch_mult[i]
            up[i] = Level(block_in, block_out, c.num_res_blocks + 1, i in c.attn_layers, i in c.upsample_levels)
            block_in = block_out
        self.up = nn.ModuleList(up[i] for i in range(levels))  # indexed by level, run from the widest
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv1d(block_in, c.out_ch, c.kernel_size, padding=c.kernel_size // 2)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


class MelVAEDecoder(nn.Module):
    """AutoencoderKL's `decode`: post_quant_conv, then the decoder. (B, 20, T) -> (B, 80, 2T) log-mel."""

    def __init__(self, config: VAEConfig = VAEConfig()) -> None:
        super().__init__()
        self.config = config
        self.post_quant_conv = nn.Conv1d(config.embed_dim, config.z_channels, 1)
        self.decoder = Decoder1D(config)

    @property
    def time_upsampling(self) -> int:
        return 2 ** len(self.config.down_layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))

    decode = forward


def split_checkpoint(state_dict: dict, prefix: str = CHECKPOINT_PREFIX) -> dict:
    """The decoder's tensors of a Lightning state dict (`first_stage_model.decoder.*` and
    `first_stage_model.post_quant_conv.*`), prefix removed; the encoder's are left out."""
    keep = ("decoder.", "post_quant_conv.")
    return {k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix) and k[len(prefix):].startswith(keep)}
