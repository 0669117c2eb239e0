"""Lumina-Next as the anagram fork of Next-DiT runs it (Lumina-T2X visual_anagrams/models/nextdit.py),
for the Anagrams task only; the Image and Compositional tasks keep engines/lumina_next.py's demo
sampling.

The fork differs from the Lumina-Next demo above the training size:

- RoPE: NTK scaling (theta · scale) at every timestep, its `extra_mode = "ntk_v1"`, where the demo
  switches from linear to NTK at a watershed timestep; the scale is √(W·H) / native, and 1 (none)
  at or below the training size (generate.py's `do_extrapolation`);
- its RoPE table is 512 patches wide (the demo's and diffusers': 384);
- proportional attention is log_base(N) / √d (nextdit.py:333), where the demo and diffusers use
  √(log_base N) / √d, with base = the training size's token count.

The init phase runs at the training size with neither (generate.py passes no scale and no
proportional attention there); the refine phase with both. CFG and text encoding are the family's.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import anagram, lumina_next
from .lumina_next import LuminaNextOptions

ROPE_TABLE = 512  # patches per side of the fork's RoPE table (nextdit.py:731,883)


def refine_rope_scale(width: int, height: int, native: int, rope_scaling: str) -> float:
    """The refine phase's NTK factor: √(W·H) / native above the training size, else 1 (and 1 with
    the scaling turned off, as the reference's scaling_method gate)."""
    side = math.sqrt(width * height)
    return side / native if rope_scaling != "none" and side > native else 1.0


def fork_rope(head_dim: int, scale: float, grid: tuple[int, int] | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """The fork's 2-D RoPE table: NTK (theta · scale) whatever the timestep. With a `grid` of patch
    tokens, the part of it that grid reads, cached on `device` with the demo's (lumina_next.rope_table)."""
    if grid is None:
        from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

        return get_2d_rotary_pos_embed_lumina(head_dim, ROPE_TABLE, ROPE_TABLE, linear_factor=1.0, ntk_factor=scale)
    return lumina_next.rope_table(head_dim, ROPE_TABLE, grid, 1.0, scale, device)


def fork_softmax_scale(length: int, base_length: int | None, head_dim: int) -> float:
    """Self-attention's softmax scale: log_base(N) / √d with proportional attention, else 1 / √d."""
    if base_length is None:
        return 1.0 / math.sqrt(head_dim)
    return math.log(length, base_length) / math.sqrt(head_dim)


class ForkSelfAttention:
    """Next-DiT self-attention as diffusers' LuminaAttnProcessor2_0 runs it (qk-norm, RoPE on queries
    and keys, grouped-query heads, the image-token mask), with the fork's softmax scale."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                 attention_mask: torch.Tensor | None = None, query_rotary_emb: torch.Tensor | None = None,
                 key_rotary_emb: torch.Tensor | None = None, base_sequence_length: int | None = None) -> torch.Tensor:
        from diffusers.models.embeddings import apply_rotary_emb

        batch, length, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = query.shape[-1] // attn.heads
        kv_heads = key.shape[-1] // head_dim
        dtype = query.dtype
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        query = query.view(batch, -1, attn.heads, head_dim)
        key = key.view(batch, -1, kv_heads, head_dim)
        value = value.view(batch, -1, kv_heads, head_dim)
        if query_rotary_emb is not None:
            query = apply_rotary_emb(query, query_rotary_emb, use_real=False)
        if key_rotary_emb is not None:
            key = apply_rotary_emb(key, key_rotary_emb, use_real=False)
        query, key = query.to(dtype), key.to(dtype)
        repeat = attn.heads // kv_heads  # each key/value head serves `repeat` query heads, in order
        key = key.repeat_interleave(repeat, dim=2)
        value = value.repeat_interleave(repeat, dim=2)
        mask = attention_mask.bool().view(batch, 1, 1, -1).expand(-1, attn.heads, length, -1)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             attn_mask=mask,
                                             scale=fork_softmax_scale(length, base_sequence_length, head_dim))
        return out.transpose(1, 2).to(dtype)


@contextmanager
def fork_attention(transformer: Any) -> Iterator[None]:
    """The fork's self-attention in every block for the duration (cross-attention keeps diffusers'
    processor, whose scale has no proportional term); the pipeline's own processors are put back
    even on an error, since the pipeline stays loaded for other tasks."""
    blocks = [layer.attn1 for layer in transformer.layers]
    saved = [attn.processor for attn in blocks]
    fork = ForkSelfAttention()
    for attn in blocks:
        attn.processor = fork
    try:
        yield
    finally:
        for attn, processor in zip(blocks, saved):
            attn.processor = processor


def fork_velocity(pipe: Any, embeds: torch.Tensor, mask: torch.Tensor, opts: LuminaNextOptions, *,
                  rope_scale: float, base_length: int | None) -> anagram.Velocity:
    """dx/dt of the (guided) model with the fork's RoPE table at `rope_scale` and, when `base_length`
    is given, its proportional attention."""
    device = pipe._execution_device
    use_cfg = opts.cfg > 1.0
    head_dim = pipe.transformer.head_dim
    attention_kwargs = {"base_sequence_length": base_length} if base_length is not None else {}

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        rope = fork_rope(head_dim, rope_scale, lumina_next.token_grid(pipe, x), x.device)  # the same at every t
        batch = torch.cat([x, x]) if use_cfg else x
        timestep = torch.full((batch.shape[0],), t, device=device, dtype=x.dtype)
        with fork_attention(pipe.transformer) if base_length is not None else nullcontext():
            pred = pipe.transformer(hidden_states=batch, timestep=timestep, encoder_hidden_states=embeds,
                                    encoder_mask=mask, image_rotary_emb=rope,
                                    cross_attention_kwargs=attention_kwargs, return_dict=False)[0]
        pred = pred.chunk(2, dim=1)[0]  # learned sigma: the second half is the variance
        return lumina_next.guided(pred, opts.cfg, opts.cfg_mode) if use_cfg else pred

    return velocity


def two_phase(pipe: Any, prompts: list[str], negative_prompt: str, width: int, height: int,
              opts: LuminaNextOptions, vae_tiles: bool = True) -> anagram.TwoPhase:
    """The anagram sampler's two phases on a LuminaPipeline: one velocity per reading in each; the
    refine phase's VAE passes in tiles (the reference's) unless `vae_tiles` is off."""
    use_cfg = opts.cfg > 1.0
    texts = [lumina_next.encode(pipe, [prompt], negative_prompt, 1, use_cfg, names=[f"reading {i + 1}"])
             for i, prompt in enumerate(prompts)]
    native = pipe.default_image_size
    dtype = texts[0][0].dtype
    base = (native // 16) ** 2 if opts.proportional_attn else None
    scale = refine_rope_scale(width, height, native, opts.rope_scaling)
    return anagram.vae_two_phase(
        init=[fork_velocity(pipe, f, m, opts, rope_scale=1.0, base_length=None) for f, m in texts],
        refine=[fork_velocity(pipe, f, m, opts, rope_scale=scale, base_length=base) for f, m in texts],
        latents=lambda w, h, generator: lumina_next.initial_latents(pipe, 1, w, h, dtype, generator),
        vae=pipe.vae, device=pipe._execution_device, native=native, width=width, height=height,
        multiple=pipe.vae_scale_factor * pipe.transformer.config.patch_size, tiled=vae_tiles)
