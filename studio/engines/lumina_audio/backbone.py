"""FlagDiTv2, the diffusion transformer of Lumina-T2Audio and Lumina-T2Music, in one file.

The reference is Alpha-VLLM/Lumina-T2X `lumina_audio/models/diffusion/flag_large_dit.py`
(`FlagDiT`, `FlagDiTv2`); `lumina_music/` holds a byte-identical copy. Both releases build it from
their config (`unet_config`): 20 latent channels in and out, hidden 768, depth 16, 32 heads
(head_dim 24), context_dim 1024, max_len 1000; 197,940,244 parameters in 254 tensors, which sit
under `model.diffusion_model.` in the Lightning checkpoint.

The sequence is the latent's time axis: (B, 20, T) is read as T tokens of 20 channels, projected
to the hidden width (`proj_in`). Every block is adaLN-modulated (six vectors from the timestep
embedding plus `cap_embedder`, a LayerNorm and Linear over the mean-pooled context), with
self-attention under a 1-D complex RoPE (theta 10000, adjacent pairs as complex numbers) and a
per-head tanh-gated cross-attention to the context summed in the same module (the context's keys
and values take no RoPE), then a SwiGLU feed-forward (2048 wide). No q/k norms (`qk_norm` is
None in FlagDiTv2). The final layer is a LayerNorm without affine, adaLN shift/scale and a Linear
back to 20 channels. The context is never masked: the reference's masks are all ones, so the
pooled context is the plain mean and the attention is unmasked.

The timestep handed in is an integer in [0, 1000] (the CFM wrapper's `(t * 1000).long()`; see
sampling.py); the sinusoidal embedding is computed from it in float32.

Our own code: SDPA for attention (the reference imports flash-attn unconditionally but, in float32
as its demos run, takes the SDPA branch), no fairscale/apex, nothing tied to CUDA. Module and
parameter names are the reference's, so its state dict loads as is. RoPE frequencies are computed
per call on the input's device (the reference precomputes 1000 positions with `.cuda()` and
slices; every entry is the same product), so there is no buffer to move or to miss on load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 10000.0
FREQUENCY_DIM = 256  # the timestep's sinusoidal embedding
CHECKPOINT_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class FlagDiTv2Config:
    """FlagDiTv2's constructor arguments; the defaults are the released models' (both configs)."""

    in_channels: int = 20
    context_dim: int = 1024
    hidden_size: int = 768
    depth: int = 16
    num_heads: int = 32
    max_len: int = 1000
    # FlagDiT's defaults, which FlagDiTv2 does not expose:
    multiple_of: int = 256
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def ffn_dim(self) -> int:
        hidden = int(2 * (4 * self.hidden_size) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def rope_table(head_dim: int, length: int, device: torch.device | None = None) -> torch.Tensor:
    """cos + i sin of positions 0..length-1, (length, head_dim // 2) complex64, theta 10000."""
    freqs = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float), freqs).float()
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, H, D) by freqs (L, D/2), adjacent pairs as complex numbers, in float32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs[None, :, None, :]).flatten(3).type_as(x)


class RMSNorm(nn.Module):
    """The reference's vanilla RMSNorm (apex's FusedRMSNorm has the same `weight`)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class Attention(nn.Module):
    """Self-attention over the latent's frames plus gated cross-attention to the context, summed."""

    def __init__(self, c: FlagDiTv2Config) -> None:
        super().__init__()
        self.n_heads, self.head_dim = c.num_heads, c.head_dim
        inner = c.num_heads * c.head_dim
        self.wq = nn.Linear(c.hidden_size, inner, bias=False)
        self.wk = nn.Linear(c.hidden_size, inner, bias=False)
        self.wv = nn.Linear(c.hidden_size, inner, bias=False)
        self.wk_y = nn.Linear(c.context_dim, inner, bias=False)
        self.wv_y = nn.Linear(c.context_dim, inner, bias=False)
        self.gate = nn.Parameter(torch.zeros(c.num_heads))
        self.wo = nn.Linear(inner, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        dtype = x.dtype
        q = self.wq(x).view(B, L, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, L, self.n_heads, self.head_dim)
        v = self.wv(x).view(B, L, self.n_heads, self.head_dim)
        q, k = apply_rope(q, freqs).to(dtype), apply_rope(k, freqs).to(dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).to(dtype)

        yk = self.wk_y(y).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
        yv = self.wv_y(y).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
        out_y = F.scaled_dot_product_attention(q, yk, yv)
        out = out + out_y * self.gate.tanh().view(1, -1, 1, 1)
        return self.wo(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, c: FlagDiTv2Config) -> None:
        super().__init__()
        self.w1 = nn.Linear(c.hidden_size, c.ffn_dim, bias=False)
        self.w2 = nn.Linear(c.ffn_dim, c.hidden_size, bias=False)
        self.w3 = nn.Linear(c.hidden_size, c.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, c: FlagDiTv2Config) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.hidden_size, eps=c.norm_eps)
        self.ffn_norm = RMSNorm(c.hidden_size, eps=c.norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.hidden_size, 6 * c.hidden_size))
        self.attention_y_norm = RMSNorm(c.context_dim, eps=c.norm_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, freqs: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.adaLN_modulation(adaln).chunk(6, dim=1)
        h = self.attention(modulate(self.attention_norm(x), shift_a, scale_a), freqs, self.attention_y_norm(y))
        x = x + gate_a.unsqueeze(1) * h
        return x + gate_f.unsqueeze(1) * self.feed_forward(modulate(self.ffn_norm(x), shift_f, scale_f))


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_DIM, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = FREQUENCY_DIM // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return self.mlp(embedding.to(self.mlp[0].weight.dtype))


class FinalLayer(nn.Module):
    def __init__(self, c: FlagDiTv2Config) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(c.hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(c.hidden_size, c.in_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.hidden_size, 2 * c.hidden_size))

    def forward(self, x: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(adaln).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlagDiTv2(nn.Module):
    """The velocity network: forward(x (B, C, T), t (B,) integer timesteps, context (B, N, 1024))."""

    # Kept in full precision under fp8 weight storage: the small input, conditioning and output layers.
    skip_in_fp8 = ("proj_in", "t_embedder", "cap_embedder", "final_layer")

    def __init__(self, config: FlagDiTv2Config = FlagDiTv2Config()) -> None:
        super().__init__()
        c = self.config = config
        self.t_embedder = TimestepEmbedder(c.hidden_size)
        self.proj_in = nn.Linear(c.in_channels, c.hidden_size)
        self.blocks = nn.ModuleList(TransformerBlock(c) for _ in range(c.depth))
        self.final_layer = FinalLayer(c)
        self.cap_embedder = nn.Sequential(nn.LayerNorm(c.context_dim), nn.Linear(c.context_dim, c.hidden_size))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        if length > self.config.max_len:
            # The reference's table stops at max_len (its RoPE would fail a shape check beyond it).
            raise ValueError(f"a latent of {length} frames is longer than the model's {self.config.max_len}")
        h = self.proj_in(x.transpose(1, 2))
        # The reference pools context * its all-ones float mask: float32 sums, divided by the length.
        pooled = (context.float().sum(dim=1) / context.shape[1]).to(context)
        adaln = self.t_embedder(t) + self.cap_embedder(pooled)
        freqs = rope_table(self.config.head_dim, length, device=x.device)
        for block in self.blocks:
            h = block(h, context, freqs, adaln)
        return self.final_layer(h, adaln).transpose(1, 2)


def split_checkpoint(state_dict: dict, prefix: str = CHECKPOINT_PREFIX) -> dict:
    """The backbone's tensors of a Lightning state dict (`model.diffusion_model.*`), prefix removed."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
