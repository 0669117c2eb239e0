"""LlamaGen's autoregressive image GPT (class- and text-conditional), for inference.

A Llama-style decoder over VQ image tokens: RMSNorm, SwiGLU, bias-free linears, a fused qkv
projection and a KV cache. The condition (one class embedding, or 120 projected flan-t5-xl caption
features) is a prefix of `cls_token_num` tokens; image tokens follow in raster order and carry a 2D
RoPE (half of each head's frequencies for the row, half for the column).

Module and parameter names mirror the official checkpoints so their state dicts load with
`strict=True`. Two quirks of the original are kept on purpose because the weights were trained
with them: the prefix rows of the RoPE table are all zeros (cos = sin = 0, not an identity
rotation), so condition tokens have zero queries and keys; and the unconditional caption
embedding is a buffer, so it lives in the state dict. Sampling from it is in `sampling`.
"""

from __future__ import annotations

import argparse
import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelNotAvailable
from .options import GPT_CONFIGS  # the size table lives where model cards read it, without torch


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of k that is >= n."""
    return n if n % k == 0 else n + k - (n % k)


@dataclass(frozen=True)
class GPTConfig:
    """Architecture of one LlamaGen GPT; defaults are the official ones."""

    dim: int
    n_layer: int
    n_head: int
    n_kv_head: int | None = None  # None: plain multi-head attention (all official models)
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = 16384
    model_type: str = "c2i"  # "c2i" (class id) or "t2i" (caption features)
    num_classes: int = 1000
    # Trained with class dropout, so the label table has a null class (index num_classes) for CFG.
    null_class: bool = True
    caption_dim: int = 2048  # flan-t5-xl hidden size
    caption_token_num: int = 120  # rows of the unconditional caption embedding
    cls_token_num: int = 1  # condition prefix length: 1 for c2i, 120 for t2i
    block_size: int = 256  # image tokens: 256 for 256px/16, 576 for 384px, 1024 for 512px

    def __post_init__(self) -> None:
        if self.model_type not in ("c2i", "t2i"):
            raise ValueError(f"model_type must be 'c2i' or 't2i', not {self.model_type!r}")
        if self.dim % self.n_head or self.n_head % self.kv_heads:
            raise ValueError("dim must divide by n_head and n_head by n_kv_head")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(f"block_size {self.block_size} is not a square grid of tokens")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @classmethod
    def named(cls, name: str, model_type: str = "c2i", **overrides: object) -> GPTConfig:
        """An official size ("B", "L", "XL", "XXL", "3B", ...); t2i defaults to a 120-token prefix."""
        if name.upper().removeprefix("GPT-") not in GPT_CONFIGS:
            raise ValueError(f"unknown LlamaGen GPT {name!r}; known: {', '.join(GPT_CONFIGS)}")
        n_layer, n_head, dim = GPT_CONFIGS[name.upper().removeprefix("GPT-")]
        base = cls(dim=dim, n_layer=n_layer, n_head=n_head, model_type=model_type,
                   cls_token_num=1 if model_type == "c2i" else 120)
        return replace(base, **overrides)

    @classmethod
    def tiny(cls, model_type: str = "c2i", **overrides: object) -> GPTConfig:
        """A few-kilobyte model of the same architecture, for tests and built-in offline models."""
        t2i = model_type == "t2i"
        base = cls(dim=32, n_layer=2, n_head=4, multiple_of=16, vocab_size=64, model_type=model_type,
                   num_classes=10, caption_dim=24, caption_token_num=6, cls_token_num=6 if t2i else 1,
                   block_size=16)
        return replace(base, **overrides)


# ----------------------------------------------------------------------------- 2D RoPE


def precompute_freqs_cis_2d(grid_size: int, n_elem: int, base: float = 10000.0,
                            cls_token_num: int = 120) -> torch.Tensor:
    """(cls_token_num + grid_size**2, n_elem // 2, 2) table of (cos, sin) per rotated pair.

    Each head's n_elem // 2 pairs are split in two: the first half turns with the token's row, the
    second half with its column, both with frequencies base^(-2i / (n_elem / 2)). The prefix rows
    are zeros, exactly as in the original (this zeroes the condition tokens' queries and keys).
    """
    half = n_elem // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    angles = torch.outer(torch.arange(grid_size, device=freqs.device).float(), freqs)  # (grid, half // 2)
    rows = angles[:, None, :].expand(-1, grid_size, -1)
    cols = angles[None, :, :].expand(grid_size, -1, -1)
    grid = torch.cat([rows, cols], dim=-1)  # (grid, grid, n_elem // 2); flattened row-major below
    table = torch.stack([grid.cos(), grid.sin()], dim=-1).flatten(0, 1)
    prefix = torch.zeros(cls_token_num, table.shape[1], 2, device=table.device)
    return torch.cat([prefix, table])


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, S, H, D) by freqs_cis (S, D // 2, 2), in fp32."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    rope = freqs_cis.view(1, pairs.shape[1], 1, pairs.shape[3], 2)
    cos, sin = rope[..., 0], rope[..., 1]
    real, imag = pairs[..., 0], pairs[..., 1]
    out = torch.stack([real * cos - imag * sin, imag * cos + real * sin], dim=-1)
    return out.flatten(3).type_as(x)


# ----------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and cast back before the weight, as the original does.
        xf = x.float()
        normed = xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.ffn_hidden
        self.w1 = nn.Linear(config.dim, hidden, bias=False)
        self.w3 = nn.Linear(config.dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class KVCache:
    """Per-layer key/value cache. A plain object, not a module: it never enters the state dict, and
    offload hooks that move a layer's weights between devices leave it where generation put it."""

    def __init__(self, max_batch_size: int, max_seq_length: int, n_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | None = None) -> None:
        shape = (max_batch_size, n_heads, max_seq_length, head_dim)
        self.k_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.v_cache = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H, S, D) at positions input_pos (S,); return the first B rows of the cache."""
        bsz = k.shape[0]
        self.k_cache[:bsz, :, input_pos] = k
        self.v_cache[:bsz, :, input_pos] = v
        return self.k_cache[:bsz], self.v_cache[:bsz]


class Attention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.wqkv = nn.Linear(config.dim, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.wo = nn.Linear(config.dim, config.dim, bias=False)
        self.kv_cache: KVCache | None = None

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, input_pos: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        kv_size = self.n_kv_head * self.head_dim
        q, k, v = self.wqkv(x).split([self.dim, kv_size, kv_size], dim=-1)
        q = apply_rotary_emb(q.view(bsz, seqlen, self.n_head, self.head_dim), freqs_cis)
        k = apply_rotary_emb(k.view(bsz, seqlen, self.n_kv_head, self.head_dim), freqs_cis)
        v = v.view(bsz, seqlen, self.n_kv_head, self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))

        if self.kv_cache is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, self.dim))


class TransformerBlock(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, eps=config.norm_eps)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, input_pos: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), freqs_cis, input_pos, mask)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    """Class id -> one prefix token; row `num_classes` is the null class used for CFG."""

    def __init__(self, num_classes: int, dim: int, null_class: bool) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = nn.Embedding(num_classes + int(null_class), dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels).unsqueeze(1)


class CaptionMLP(nn.Module):
    """fc1 -> tanh-GELU -> fc2, bias-free (the original's MLP)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, bias=False)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CaptionEmbedder(nn.Module):
    """Caption features (B, N, caption_dim) -> prefix tokens (B, N, dim)."""

    def __init__(self, caption_dim: int, dim: int, token_num: int) -> None:
        super().__init__()
        self.cap_proj = CaptionMLP(caption_dim, dim, dim)
        # A buffer, not a parameter, in the original too: it is saved with the weights.
        self.register_buffer("uncond_embedding", torch.randn(token_num, caption_dim) / caption_dim ** 0.5)

    def forward(self, caption: torch.Tensor) -> torch.Tensor:
        return self.cap_proj(caption.to(self.cap_proj.fc1.weight.dtype))


# ----------------------------------------------------------------------------- model


def causal_mask(batch: int, length: int, cond_mask: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """(batch, length, length) bool attention mask, True = may attend.

    With cond_mask (batch, T) (the caption's valid-token mask), every query is also barred from the
    padded prefix keys, and the diagonal is forced back on so no row is empty; this is how the
    original's generate() applies its `emb_masks`.
    """
    mask = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device)).expand(batch, -1, -1).clone()
    if cond_mask is not None:
        mask[:, :, : cond_mask.shape[1]] &= cond_mask.to(device=mask.device, dtype=torch.bool)[:, None, :]
        mask |= torch.eye(length, dtype=torch.bool, device=mask.device)
    return mask


class GPT(nn.Module):
    """LlamaGen's GPT; state-dict names and shapes match the official checkpoints."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        if config.model_type == "c2i":
            self.cls_embedding: nn.Module = LabelEmbedder(config.num_classes, config.dim, config.null_class)
        else:
            self.cls_embedding = CaptionEmbedder(config.caption_dim, config.dim, config.caption_token_num)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, eps=config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        # Derived from the config, never saved (the official files do not carry it), and a plain
        # attribute as in the original: no .to(dtype) casts it, no offload hook moves it.
        self.freqs_cis = self._rope_table()
        self.causal_mask: torch.Tensor | None = None
        # Where generation runs when the weights are not all there (offloaded); None: the weights' device.
        self.execution_device: torch.device | None = None

    def _rope_table(self, device: torch.device | None = None) -> torch.Tensor:
        c = self.config
        with torch.device(device) if device is not None else nullcontext():
            return precompute_freqs_cis_2d(c.grid_size, c.head_dim, c.rope_base, c.cls_token_num)

    def _rope(self, input_pos: torch.Tensor) -> torch.Tensor:
        if self.freqs_cis.device != input_pos.device:
            self.freqs_cis = self.freqs_cis.to(input_pos.device)
        return self.freqs_cis[input_pos]

    @property
    def device(self) -> torch.device:
        return self.execution_device or self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def setup_caches(self, max_batch_size: int, max_seq_length: int, dtype: torch.dtype | None = None) -> None:
        """Allocate per-layer KV caches and the (batch, L, L) causal mask; L is rounded up to 8."""
        length = find_multiple(max_seq_length, 8)
        dtype = dtype or self.dtype
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(max_batch_size, length, self.config.kv_heads,
                                               self.config.head_dim, dtype, self.device)
        self.causal_mask = causal_mask(max_batch_size, length, device=self.device)
        self.freqs_cis = self._rope_table(self.device)

    def reset_caches(self) -> None:
        """Free the KV caches; forward() then attends causally over its own input only."""
        for layer in self.layers:
            layer.attention.kv_cache = None
        self.causal_mask = None

    def embed_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Class ids (B,) or caption features (B, N, caption_dim) -> prefix (B, cls_token_num, dim)."""
        return self.cls_embedding(cond)[:, : self.config.cls_token_num]

    def forward(self, idx: torch.Tensor | None, cond: torch.Tensor | None = None,
                input_pos: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Float32 logits (B, S, vocab) for the condition prefix and/or image tokens idx (B, S').

        With caches set up, the input is written at `input_pos` and attends to what the cache
        holds (mask default: the cache's causal mask rows). Without caches, it is one causal pass
        over [prefix; idx] (positions default to 0..S-1; `mask` (B, 1, S, S) may replace causality).
        """
        parts = []
        if cond is not None:
            parts.append(self.embed_condition(cond))
        if idx is not None:
            parts.append(self.tok_embeddings(idx))
        if not parts:
            raise ValueError("forward needs image tokens, a condition, or both")
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if input_pos is None:
            input_pos = torch.arange(h.shape[1], device=h.device)
        if mask is None and self.causal_mask is not None:
            mask = self.causal_mask[: h.shape[0], None, input_pos]
        freqs_cis = self._rope(input_pos)
        for layer in self.layers:
            h = layer(h, freqs_cis, input_pos, mask)
        return self.output(self.norm(h)).float()

    def prefill(self, cond: torch.Tensor) -> torch.Tensor:
        """Run the condition prefix through the caches; logits (B, cls_token_num, vocab)."""
        positions = torch.arange(self.config.cls_token_num, device=self.device)
        return self(None, cond, positions)

    def decode_one(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        """Feed one image token per row (B, 1) at sequence position `pos`; logits (B, 1, vocab)."""
        return self(tokens, None, torch.tensor([pos], device=self.device))


# ----------------------------------------------------------------------------- weights


def load_state_dict_from_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official LlamaGen GPT checkpoint into a plain state dict for `GPT.load_state_dict`.

    Accepts .safetensors, or a torch file holding {"model": ...} (DDP training), {"module": ...}
    (DeepSpeed), {"state_dict": ...} or a bare state dict (FSDP consolidated). Strips "module." /
    "_orig_mod." prefixes and drops a stale `freqs_cis` that some files carry.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: object = load_file(str(path))
    else:
        # Training checkpoints also pickle their argparse Namespace under "args"; allow just that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, Mapping):
        for key in ("model", "module", "state_dict"):  # the original samplers' order
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelNotAvailable(f"{path.name} is not a LlamaGen GPT checkpoint (no state dict of tensors in it)")

    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        changed = True
        while changed:
            changed = False
            for prefix in ("module.", "_orig_mod."):
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        if key != "freqs_cis":
            state[key] = value
    return state
