"""Infinity's transformer (infinity/models/infinity.py and basic.py), for inference.

Next-scale prediction: the image is a sum of bit codes on a schedule of growing token grids; at each
scale the model sees the upsampled sum so far (one token per cell of the new grid), attends to every
earlier scale through a KV cache, and predicts the new scale's bits, two logits per bit.

Module and parameter names are the official ones, so a released state dict loads as it is:
`block_chunks.{c}.module.{j}` blocks of cosine self-attention (L2-normalised q and k, a learned
per-head scale clamped at log 100, q/v biases, star-style 2D RoPE), cross-attention to the text and
a GELU FFN, all under one shared AdaLN (`shared_ada_lin` + each block's `ada_gss`); a pooled text
token starts the sequence and conditions the AdaLN; `lvl_embed` marks each scale, added before the
first block only. Only the configuration that released checkpoints use is built (bit labels,
RoPE in every layer, no scale-schedule embedding, no spatial patchify): those are facts of the
family, not options. Cross-attention runs on SDPA with a key-padding mask where the reference
packs variable-length text for flash-attn.

Dtypes: the blocks' weights in the model's dtype (the reference's bf16=1), the rest in float32; the
residual stream, AdaLN, RoPE, cosine-attention q/k and the head compute in float32, each block's
linear layers and attention in its own dtype. The reference runs all of it under bf16 autocast, so
it also rounds to bfloat16 what word_embed, the text projections and the attentive pool put out,
every cross-attention (flash-attn's cast, basic.py:395), the attention branch before its gamma and
the learned attention scale's exp; here those stay in float32 (more precise, never less). In
float32 the port gives the reference's bits and logits (tests/test_infinity_reference.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .sampling import sample_codes
from .schedules import RATIOS

LOG_100 = math.log(100.0)  # the cap on the learned attention scale (max_scale_mul)
LVL_EMBEDDINGS = 15


@dataclass(frozen=True)
class InfinityConfig:
    depth: int
    embed_dim: int
    num_heads: int
    block_chunks: int
    d_vae: int = 32  # bits per token: the VAE's codebook_dim
    text_channels: int = 2048  # flan-t5-xl's width
    text_maxlen: int = 512
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_hidden(self) -> int:
        return round(self.embed_dim * self.mlp_ratio / 256) * 256  # basic.py's rounding

    @property
    def pool_heads(self) -> int:
        # TextAttentivePool: Ct5 / 128 heads (64 above a 4096 width), hence text_channels >= 128.
        return self.text_channels // (64 if self.embed_dim > 4096 else 128)

    def with_file(self, **facts: int) -> "InfinityConfig":
        return replace(self, **facts)


# tools/run_infinity.py's model_type configurations (d_vae and text width come from the checkpoint).
CONFIGS = {
    "infinity_2b": InfinityConfig(depth=32, embed_dim=2048, num_heads=16, block_chunks=8),
    "infinity_8b": InfinityConfig(depth=40, embed_dim=3584, num_heads=28, block_chunks=8),
    "infinity_layer12": InfinityConfig(depth=12, embed_dim=768, num_heads=8, block_chunks=4),  # the 125M
    "infinity_layer16": InfinityConfig(depth=16, embed_dim=1152, num_heads=12, block_chunks=4),
    "infinity_layer24": InfinityConfig(depth=24, embed_dim=1536, num_heads=16, block_chunks=4),
    # The built-in test model: text 128 wide (the attentive pool's one head), 4-bit codes, and a width
    # of 64 so the FFN rounds to 256 hidden units (at 32 it would round to none).
    "tiny": InfinityConfig(depth=2, embed_dim=64, num_heads=2, block_chunks=2, d_vae=4, text_channels=128),
}


def _linear(layer: nn.Linear, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A linear layer in its own dtype, fed from the float32 stream."""
    weight = layer.weight
    bias = layer.bias if bias is None else bias
    return F.linear(x.to(weight.dtype), weight, None if bias is None else bias.to(weight.dtype))


def _ada_norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), x.shape[-1:], eps=eps).mul(scale.add(1)).add_(shift)


class KVCache:
    """Self-attention keys and values of every scale so far, per block."""

    def __init__(self) -> None:
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}
        self.text: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # cross-attention K/V: same every scale

    def extend(self, block: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if block in self.k:
            k, v = torch.cat((self.k[block], k), dim=2), torch.cat((self.v[block], v), dim=2)
        self.k[block], self.v[block] = k, v
        return k, v


def rope_table(config: InfinityConfig, grids: list[tuple[int, int]], ratio: float,
               device: torch.device | None = None) -> torch.Tensor:
    """cos/sin (2, tokens, head_dim/2) for every token of a schedule, "star style"
    (rope2d_normalized_by_hw=2): each grid's rows and columns are spread over the final grid of the
    ratio's *1M* schedule (64 x 64 at 1:1, whatever the budget), rounded, then rotated by those
    positions: the first half of the pairs by the row, the second by the column."""
    half = config.head_dim // 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))
    final_h, final_w = RATIOS[ratio][-1]
    parts = []
    for h, w in grids:
        rows = (torch.arange(h) * (final_h / h)).round().int().float()
        cols = (torch.arange(w) * (final_w / w)).round().int().float()
        angle = torch.cat([torch.outer(rows, inv_freq)[:, None, :].expand(h, w, -1),
                           torch.outer(cols, inv_freq)[None, :, :].expand(h, w, -1)], dim=-1)
        parts.append(angle.reshape(h * w, half))
    angles = torch.cat(parts)
    return torch.stack([angles.cos(), angles.sin()]).to(device)


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, H, L, hd) by rope (2, L, hd/2), in float32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = rope[0], rope[1]
    out = torch.stack([cos * pairs[..., 0] - sin * pairs[..., 1], sin * pairs[..., 0] + cos * pairs[..., 1]], -1)
    return out.reshape(x.shape)


class SelfAttention(nn.Module):
    def __init__(self, c: InfinityConfig) -> None:
        super().__init__()
        C, H = c.embed_dim, c.num_heads
        self.num_heads, self.head_dim = H, c.head_dim
        # Learned per-head log scale; released files hold it as 1H11 or, from flash-attn runs, 11H1.
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, cache: KVCache, index: int) -> torch.Tensor:
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        q, k, v = _linear(self.mat_qkv, x, bias).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scale = self.scale_mul_1H11.float().clamp_max(LOG_100).exp()
        # Cosine attention: unit q and k, the learned scale instead of 1/sqrt(d) (SDPA scale=1).
        q = apply_rope(F.normalize(q.float(), dim=-1).mul(scale), rope)
        k = apply_rope(F.normalize(k.float(), dim=-1), rope)
        k, v = cache.extend(index, k.to(v.dtype), v)
        out = F.scaled_dot_product_attention(q.to(v.dtype), k, v, scale=1.0)
        return _linear(self.proj, out.transpose(1, 2).reshape(B, L, C)).float()


class CrossAttention(nn.Module):
    """Attention from image tokens (or, pooling, one learned query per head) to the text tokens."""

    def __init__(self, embed_dim: int, kv_dim: int, num_heads: int, pool: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, embed_dim // num_heads
        if pool:
            self.mat_q = nn.Parameter(torch.zeros(1, num_heads, self.head_dim))
        else:
            self.mat_q = nn.Linear(embed_dim, embed_dim)
        self.mat_kv = nn.Linear(kv_dim, 2 * embed_dim, bias=False)
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.proj = nn.Linear(embed_dim, embed_dim)

    def text_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = text.shape
        bias = torch.cat((self.zero_k_bias, self.v_bias))
        k, v = _linear(self.mat_kv, text, bias).view(B, T, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor | None, kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        k, v = kv
        B = k.shape[0]
        if isinstance(self.mat_q, nn.Parameter):
            q = self.mat_q.to(k.dtype)[None].expand(B, -1, -1, -1).transpose(1, 2)  # (B, H, 1, hd)
        else:
            q = _linear(self.mat_q, x).view(B, x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        # The padding of shorter prompts is masked out: what flash-attn's packed varlen call does.
        out = F.scaled_dot_product_attention(q.to(v.dtype), k, v, attn_mask=mask[:, None, None, :])
        return _linear(self.proj, out.transpose(1, 2).reshape(B, q.shape[2], -1)).float()


class FFN(nn.Module):
    def __init__(self, c: InfinityConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c.embed_dim, c.ffn_hidden)
        self.fc2 = nn.Linear(c.ffn_hidden, c.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self.fc2, F.gelu(_linear(self.fc1, x), approximate="tanh")).float()


class CrossAttnBlock(nn.Module):
    def __init__(self, c: InfinityConfig) -> None:
        super().__init__()
        self.eps = c.norm_eps
        self.sa = SelfAttention(c)
        self.ca = CrossAttention(c.embed_dim, c.embed_dim, c.num_heads)
        self.ffn = FFN(c)
        self.ca_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, c.embed_dim))

    def forward(self, x: torch.Tensor, gss: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
                rope: torch.Tensor, cache: KVCache, index: int) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = (self.ada_gss.float() + gss).unbind(2)
        x = x + self.sa(_ada_norm(x, scale1, shift1, self.eps), rope, cache, index).mul_(gamma1)
        if index not in cache.text:
            cache.text[index] = self.ca.text_kv(text)
        normed = F.layer_norm(x, x.shape[-1:], self.ca_norm.weight.float(), self.ca_norm.bias.float(), self.eps)
        x = x + self.ca(normed, cache.text[index], mask)
        return x + self.ffn(_ada_norm(x, scale2, shift2, self.eps)).mul(gamma2)


class MultipleLayers(nn.Module):
    """A chunk of blocks (`block_chunks.{c}.module.{j}`, the checkpoints' names)."""

    def __init__(self, blocks: list[CrossAttnBlock]) -> None:
        super().__init__()
        self.module = nn.ModuleList(blocks)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()


class TextAttentivePool(nn.Module):
    def __init__(self, c: InfinityConfig) -> None:
        super().__init__()
        self.ca = CrossAttention(c.embed_dim, c.text_channels, c.pool_heads, pool=True)

    def forward(self, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.ca(None, self.ca.text_kv(text), mask).squeeze(1)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, c: InfinityConfig) -> None:
        super().__init__()
        self.eps = c.norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(c.embed_dim, 2 * c.embed_dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.ada_lin(cond.float()).view(-1, 1, 2, x.shape[-1]).unbind(2)
        return _ada_norm(x, scale, shift, self.eps)


@dataclass
class TextCondition:
    """What the text does to a run: the AdaLN parameters, the first token, cross-attention K/V."""

    gss: torch.Tensor  # (B, 1, 6, C)
    cond: torch.Tensor  # (B, C): the pooled text, the head's AdaLN condition
    sos: torch.Tensor  # (B, 1, C)
    text: torch.Tensor  # (B, T, C)
    mask: torch.Tensor  # (B, T) bool: real tokens


class Infinity(nn.Module):
    def __init__(self, config: InfinityConfig) -> None:
        super().__init__()
        c = self.config = config
        C = c.embed_dim
        if c.depth % c.block_chunks:
            raise ValueError(f"depth {c.depth} does not split into {c.block_chunks} chunks")
        # The learned unconditional text: CFG's other half, one row per text position.
        self.cfg_uncond = nn.Parameter(torch.zeros(c.text_maxlen, c.text_channels))
        self.text_norm = RMSNorm(c.text_channels, c.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(c)
        self.text_proj_for_ca = nn.Sequential(nn.Linear(c.text_channels, C), nn.GELU(approximate="tanh"),
                                              nn.Linear(C, C))
        self.pos_start = nn.Parameter(torch.zeros(1, 1, C))
        self.lvl_embed = nn.Embedding(LVL_EMBEDDINGS, C)
        self.word_embed = nn.Linear(c.d_vae, C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))
        per_chunk = c.depth // c.block_chunks
        self.block_chunks = nn.ModuleList(
            MultipleLayers([CrossAttnBlock(c) for _ in range(per_chunk)]) for _ in range(c.block_chunks))
        self.head_nm = AdaLNBeforeHead(c)
        self.head = nn.Linear(C, 2 * c.d_vae)

    @property
    def blocks(self) -> list[CrossAttnBlock]:
        return [block for chunk in self.block_chunks for block in chunk.module]

    def condition(self, text: torch.Tensor, mask: torch.Tensor) -> TextCondition:
        """text: flan-t5 features (B, T, Ct5), cond rows then uncond rows; mask (B, T) bool."""
        text = self.text_norm(text)
        cond = self.text_proj_for_sos(text, mask)
        kv = self.text_proj_for_ca(text.float())
        gss = self.shared_ada_lin(cond).view(-1, 1, 6, self.config.embed_dim)
        return TextCondition(gss=gss, cond=cond, sos=cond[:, None] + self.pos_start, text=kv, mask=mask)

    def step(self, x: torch.Tensor, scale_index: int, cond: TextCondition, rope: torch.Tensor,
             cache: KVCache) -> torch.Tensor:
        """One scale: its input tokens (B, L, C) -> bit logits (B, L, d_vae, 2)."""
        lvl = self.lvl_embed.weight[scale_index].float()
        x = x.float() + lvl  # before the first block only (add_lvl_embeding_only_first_block)
        for index, block in enumerate(self.blocks):
            x = block(x, cond.gss, cond.text, cond.mask, rope, cache, index)
        logits = self.head(self.head_nm(x, cond.cond))
        return logits.view(*logits.shape[:2], self.config.d_vae, 2)

    def forward(self, text: torch.Tensor, mask: torch.Tensor, grids: list[tuple[int, int]], ratio: float,
                **sampling) -> torch.Tensor:
        """Text features -> summed codes (B, d, H, W): the whole per-scale loop (sampling.sample_codes).
        A forward, so offload hooks bring the model to the device for it."""
        rope = rope_table(self.config, grids, ratio, text.device)
        return sample_codes(self, self.condition(text, mask), grids, rope, KVCache(), **sampling)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """The next scale's input: summed codes at its grid (B, d, h, w) -> tokens (B, h*w, C)."""
        return self.word_embed(codes.flatten(2).transpose(1, 2).float())


def build_on_meta(config: InfinityConfig) -> Infinity:
    with torch.device("meta"):
        return Infinity(config)
