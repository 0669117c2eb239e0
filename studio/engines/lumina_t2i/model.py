"""Flag-DiT, Lumina-T2I's diffusion transformer (lumina_t2i/models/model.py, `DiT_Llama`), in one file.

A LLaMA-style stack over the image's patch tokens: each block is adaLN-modulated (from the timestep
and the mask-pooled caption), with self-attention and a zero-initialised, per-head gated
cross-attention to the caption summed in the same module, then a SwiGLU feed-forward. The released
5B model was trained with `qk_norm`: LayerNorms on q, k and the caption's k.

The sequence is the latent's patches row by row, with a learned `eol_token` closing every row, so
one 1-D RoPE over the flattened positions tells rows apart; NTK scaling multiplies its theta by the
ratio of areas (the demo's `ntk_factor`). Proportional attention scales the self-attention logits
by sqrt(log_base(L) / head_dim). The output learns sigma (8 channels); the first 4 are the velocity.

Module and parameter names are the official checkpoint's (fairscale's Column/RowParallelLinear hold
plain `weight`/`bias`, so `nn.Linear` keeps the keys; apex's FusedRMSNorm is the vanilla RMSNorm
with the same `weight`). Attention is torch's SDPA; flash-attn is not needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

ROPE_THETA = 10000.0
FREQUENCY_DIM = 256  # the timestep's sinusoidal embedding


@dataclass(frozen=True)
class FlagDiTConfig:
    patch_size: int = 2
    in_channels: int = 4
    dim: int = 3072
    n_layers: int = 32
    n_heads: int = 32
    multiple_of: int = 256
    norm_eps: float = 1e-5
    learn_sigma: bool = True
    qk_norm: bool = True
    cap_feat_dim: int = 4096

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def adaln_dim(self) -> int:
        return min(self.dim, 1024)

    @property
    def ffn_dim(self) -> int:
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    @property
    def out_channels(self) -> int:
        return self.in_channels * 2 if self.learn_sigma else self.in_channels

    def with_file(self, **changes: object) -> "FlagDiTConfig":
        return replace(self, **changes)


# The reference's model names (model_args.pth `model`). Only the 5B was released; the tiny one is
# the built-in test model's, of the same architecture.
CONFIGS = {
    "DiT_Llama_5B_patch2": FlagDiTConfig(patch_size=2, dim=3072, n_layers=32, n_heads=32),
    "DiT_Llama_tiny_patch2": FlagDiTConfig(patch_size=2, dim=64, n_layers=2, n_heads=4, multiple_of=32),
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def rope_table(head_dim: int, length: int, ntk_factor: float = 1.0, device: torch.device | None = None) -> torch.Tensor:
    """cos/sin of positions 0..length-1, (length, head_dim // 2) complex64, theta = 10000 * ntk_factor.
    The reference precomputes 40,000 positions and slices; each entry is the same product."""
    theta = ROPE_THETA * ntk_factor
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float), freqs).float()
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate (B, L, H, D) by freqs (L, D/2), adjacent pairs as complex numbers, in float32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs[None, :, None, :]).flatten(3).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class Attention(nn.Module):
    """Self-attention over the image tokens plus gated cross-attention to the caption, summed."""

    def __init__(self, c: FlagDiTConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = c.n_heads, c.head_dim
        inner = c.n_heads * c.head_dim
        self.wq = nn.Linear(c.dim, inner, bias=False)
        self.wk = nn.Linear(c.dim, inner, bias=False)
        self.wv = nn.Linear(c.dim, inner, bias=False)
        self.wk_y = nn.Linear(c.cap_feat_dim, inner, bias=False)
        self.wv_y = nn.Linear(c.cap_feat_dim, inner, bias=False)
        self.gate = nn.Parameter(torch.zeros(c.n_heads))
        self.wo = nn.Linear(inner, c.dim, bias=False)
        norm = (lambda: nn.LayerNorm(inner)) if c.qk_norm else nn.Identity
        self.q_norm, self.k_norm, self.ky_norm = norm(), norm(), norm()

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor,
                base_seqlen: int | None) -> torch.Tensor:
        B, L, _ = x.shape
        dtype = x.dtype
        q = self.q_norm(self.wq(x)).view(B, L, self.n_heads, self.head_dim)
        k = self.k_norm(self.wk(x)).view(B, L, self.n_heads, self.head_dim)
        v = self.wv(x).view(B, L, self.n_heads, self.head_dim)
        q, k = apply_rope(q, freqs).to(dtype), apply_rope(k, freqs).to(dtype)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        # Proportional attention: the logits' scale follows the sequence length (eol tokens counted).
        scale = math.sqrt(math.log(L, base_seqlen) / self.head_dim) if base_seqlen else math.sqrt(1 / self.head_dim)
        # Every image token is real (one size per batch): no key mask, as the reference's all-ones mask.
        out = F.scaled_dot_product_attention(q, k, v, scale=scale).to(dtype)

        yk = self.ky_norm(self.wk_y(y)).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
        yv = self.wv_y(y).view(B, -1, self.n_heads, self.head_dim).transpose(1, 2)
        out_y = F.scaled_dot_product_attention(q, yk.to(dtype), yv, attn_mask=y_mask[:, None, None, :])
        out = out + out_y * self.gate.tanh().view(1, -1, 1, 1)
        return self.wo(out.transpose(1, 2).flatten(2))


class FeedForward(nn.Module):
    def __init__(self, c: FlagDiTConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.ffn_dim, bias=False)
        self.w2 = nn.Linear(c.ffn_dim, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, c.ffn_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, c: FlagDiTConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.dim, eps=c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, eps=c.norm_eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.adaln_dim, 6 * c.dim))
        self.attention_y_norm = RMSNorm(c.cap_feat_dim, eps=c.norm_eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, freqs: torch.Tensor,
                adaln: torch.Tensor, base_seqlen: int | None) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.adaLN_modulation(adaln).chunk(6, dim=1)
        h = self.attention(modulate(self.attention_norm(x), shift_a, scale_a), freqs, self.attention_y_norm(y),
                           y_mask, base_seqlen)
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
    def __init__(self, c: FlagDiTConfig) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(c.dim, c.patch_size ** 2 * c.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(c.adaln_dim, 2 * c.dim))

    def forward(self, x: torch.Tensor, adaln: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(adaln).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlagDiT(nn.Module):
    # Kept in full precision under fp8 weight storage: the small input, conditioning and output layers.
    skip_in_fp8 = ("x_embedder", "t_embedder", "cap_embedder", "final_layer")

    def __init__(self, config: FlagDiTConfig) -> None:
        super().__init__()
        c = self.config = config
        self.x_embedder = nn.Linear(c.patch_size ** 2 * c.in_channels, c.dim)
        self.t_embedder = TimestepEmbedder(c.adaln_dim)
        self.cap_embedder = nn.Sequential(nn.LayerNorm(c.cap_feat_dim), nn.Linear(c.cap_feat_dim, c.adaln_dim))
        self.layers = nn.ModuleList(TransformerBlock(c) for _ in range(c.n_layers))
        self.final_layer = FinalLayer(c)
        self.eol_token = nn.Parameter(torch.zeros(c.dim))
        self.pad_token = nn.Parameter(torch.zeros(c.dim))  # pads mixed-size batches; one size per batch here

    def sequence_length(self, height: int, width: int) -> int:
        """Tokens for a latent of height x width: a row of patches plus its eol token, per patch row."""
        p = self.config.patch_size
        return (height // p) * (width // p + 1)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.config.patch_size
        x = x.view(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).flatten(3)
        x = self.x_embedder(x)
        eol = self.eol_token.view(1, 1, 1, -1).expand(B, H // p, 1, -1).to(x.dtype)
        return torch.cat([x, eol], dim=2).flatten(1, 2)

    def unpatchify(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        B, p, c = x.shape[0], self.config.patch_size, self.config.out_channels
        x = x.view(B, height // p, width // p + 1, p, p, c)[:, :, :-1]  # the eol tokens' outputs dropped
        return x.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cap_feats: torch.Tensor, cap_mask: torch.Tensor,
                freqs: torch.Tensor, base_seqlen: int | None = None) -> torch.Tensor:
        """The velocity (B, 4, H, W) for latents x at times t (0 = noise), given caption features and
        their mask; `freqs` from `rope_table` for `sequence_length(H, W)` positions; `base_seqlen`
        turns on proportional attention."""
        height, width = x.shape[-2:]
        h = self.patchify(x)
        mask = cap_mask.float().unsqueeze(-1)
        pooled = ((cap_feats * mask).sum(dim=1) / mask.sum(dim=1)).to(cap_feats)
        adaln = self.t_embedder(t) + self.cap_embedder(pooled)
        keep = cap_mask.bool()
        for layer in self.layers:
            h = layer(h, cap_feats, keep, freqs[: h.shape[1]], adaln, base_seqlen)
        out = self.unpatchify(self.final_layer(h, adaln), height, width)
        return out[:, : self.config.in_channels] if self.config.learn_sigma else out
