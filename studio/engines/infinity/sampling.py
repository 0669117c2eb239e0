"""Infinity's per-scale sampling loop (autoregressive_infer_cfg with cfg_insertion_layer=0).

For each grid of the schedule: run the tokens through the transformer (KV cache over scales), take
two logits per bit, divide by tau, mix cond and uncond rows as cfg*cond + (1-cfg)*uncond, filter
with top-k / top-p as the reference does on those 2-way logits (so top-k >= 2 changes nothing, and
top-p drops a bit value only when its probability is at most 1 - top_p), draw the bits, turn them
into codes, add them (upsampled, trilinear) to the running sum at the final grid, and feed that sum,
downsampled to the next grid, back in. The reference draws the whole batch from one CUDA generator;
here each image draws from its own CPU generator, so image k is the one seed + k makes alone, on
any device.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .vae import bits_to_codes


def filter_bit_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """sample_with_top_k_top_p_also_inplace_modifying_logits_'s filtering, on (..., V) logits."""
    logits = logits.clone()
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        logits.masked_fill_(logits < logits.topk(k, dim=-1)[0].amin(dim=-1, keepdim=True), -torch.inf)
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=False)
        drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False  # the likeliest value always stays
        logits.masked_fill_(drop.scatter(order.ndim - 1, order, drop), -torch.inf)
    return logits


def draw_bits(logits: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """(B, L, d, 2) logits -> (B, L, d) bits in {0, 1}, image b from generators[b]."""
    probs = logits.float().softmax(-1)
    rows = []
    for b, generator in enumerate(generators):
        p = probs[b].reshape(-1, 2).to(generator.device)
        rows.append(torch.multinomial(p, 1, generator=generator).view(probs.shape[1:3]).to(probs.device))
    return torch.stack(rows)


@torch.no_grad()
def sample_codes(model: Any, cond: Any, grids: list[tuple[int, int]], rope: torch.Tensor, cache: Any, *,
                 cfg: float, tau: float, top_k: int, top_p: float, generators: list[torch.Generator],
                 on_scale: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Summed codes (B, d, H, W) at the final grid, from an Infinity model, its TextCondition (B rows,
    then B uncond rows when cfg != 1), the schedule's RoPE table and an empty KVCache."""
    B = len(generators)
    guided = cfg != 1
    device = cond.sos.device
    final = (1, *grids[-1])
    summed = torch.zeros(B, model.config.d_vae, *final, device=device)
    x, start = cond.sos, 0
    for si, (h, w) in enumerate(grids):
        logits = model.step(x, si, cond, rope[:, start:start + h * w], cache).float() / tau
        start += h * w
        if guided:
            logits = cfg * logits[:B] + (1 - cfg) * logits[B:]
        bits = draw_bits(filter_bit_logits(logits, top_k, top_p), generators)
        codes = bits_to_codes(bits).view(B, h, w, -1).permute(0, 3, 1, 2)[:, :, None]  # (B, d, 1, h, w)
        if si + 1 < len(grids):
            summed += F.interpolate(codes, size=final, mode="trilinear")
            nh, nw = grids[si + 1]
            nxt = F.interpolate(summed, size=(1, nh, nw), mode="trilinear").squeeze(2)
            x = model.embed_codes(nxt)
            if guided:
                x = torch.cat((x, x))
        else:
            summed += codes
        if on_scale is not None:
            on_scale(si + 1, len(grids))
    return summed.squeeze(2)
