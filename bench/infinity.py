"""Infinity's transformer, per scale: time and tokens per second with random weights.

Builds the 125M (infinity_layer12) and 2B configurations with random weights (no download), feeds
random text features of flan-t5-xl's width, and runs the per-scale loop with CFG (a batch of two
rows), as a 1-image job does; prints each scale's grid, tokens, seconds and tokens/s, the total,
and on CUDA the peak memory. The VAE decode is not included.

    python bench/infinity.py                       # CPU, float32, both models, 0.06M and 1M
    python bench/infinity.py --device cuda --dtype bfloat16
    python bench/infinity.py --models infinity_2b --pn 0.25M
"""

from __future__ import annotations

import argparse
import time

import torch

from studio.engines.infinity.model import CONFIGS, Infinity, KVCache, rope_table
from studio.engines.infinity.sampling import draw_bits, filter_bit_logits
from studio.engines.infinity.schedules import schedule


def bench(model_type: str, pn: str, device: str, dtype: torch.dtype, text_tokens: int = 32) -> None:
    torch.manual_seed(0)
    config = CONFIGS[model_type]
    with torch.device(device):
        model = Infinity(config).eval()
    for chunk in model.block_chunks:
        chunk.to(dtype)
    grids = schedule(1.0, pn)
    text = torch.randn(2, text_tokens, config.text_channels, device=device)
    mask = torch.ones(2, text_tokens, dtype=torch.bool, device=device)
    generators = [torch.Generator().manual_seed(0)]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        cond = model.condition(text, mask)
        rope, cache = rope_table(config, grids, 1.0, text.device), KVCache()
        x, start, total = cond.sos, 0, 0.0
        print(f"{model_type} ({sum(p.numel() for p in model.parameters()) / 1e6:.0f}M) at {pn}, {device} {dtype}")
        for si, (h, w) in enumerate(grids):
            t0 = time.perf_counter()
            logits = model.step(x, si, cond, rope[:, start:start + h * w], cache) / 0.5
            start += h * w
            logits = 4 * logits[:1] + (1 - 4) * logits[1:]
            bits = draw_bits(filter_bit_logits(logits, 900, 0.97), generators)
            if si + 1 < len(grids):
                nh, nw = grids[si + 1]
                codes = torch.full((1, config.d_vae, nh, nw), bits.float().mean().item(), device=device)
                x = model.embed_codes(codes)
                x = torch.cat((x, x))
            if device == "cuda":
                torch.cuda.synchronize()
            took = time.perf_counter() - t0
            total += took
            print(f"  scale {si + 1:2d}/{len(grids)} {h:3d}x{w:<3d} {h * w:5d} tokens {took:8.3f} s "
                  f"{h * w / took:9.0f} tok/s")
        tokens = sum(h * w for h, w in grids)
        print(f"  total {tokens} tokens in {total:.2f} s: {tokens / total:.0f} tok/s")
        if device == "cuda":
            print(f"  peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    del model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--models", nargs="+", default=["infinity_layer12", "infinity_2b"])
    parser.add_argument("--pn", nargs="+", default=None, help="budgets (default: 0.06M for 125M, 1M for 2B)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    for model_type in args.models:
        for pn in args.pn or (["0.06M"] if model_type == "infinity_layer12" else ["1M"]):
            bench(model_type, pn, args.device, dtype)


if __name__ == "__main__":
    main()
