"""LlamaGen decoding speed: image tokens per second of the KV-cached sampler, by GPT size.

Builds each GPT from the official configs (GPT-B/L/XL class-conditional at 384 px, the text model's
XL at 256 px) with random weights, no download, on the chosen device and dtype, and samples
`--tokens` image tokens with CFG (a batch of 2: the condition and its null twin), as the studio's
Image task does. Prints tokens/s and ms per token for each, the peak device memory on CUDA, then
one `RESULT {json}` line. A full picture is 576 tokens at 384 px (256 at 256 px, 1024 at 512 px).

    python bench/llamagen.py                                  # CPU, float32, B only, 32 tokens
    python bench/llamagen.py --device cuda --dtype bfloat16 --sizes B L XL --tokens 576
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from studio.engines.llamagen.gpt import GPT, GPTConfig  # noqa: E402
from studio.engines.llamagen.sampling import generate  # noqa: E402


def measure(size: str, kind: str, image_size: int, tokens: int, device: str, dtype: torch.dtype) -> dict:
    grid = image_size // 16
    config = GPTConfig.named(size, kind, block_size=grid * grid)
    torch.manual_seed(0)
    with torch.device(device):
        model = GPT(config).to(dtype).eval()
    cond = (torch.tensor([207]) if kind == "c2i"
            else torch.randn(1, config.cls_token_num, config.caption_dim, dtype=dtype))
    generator = torch.Generator().manual_seed(0)
    generate(model, cond, 8, cfg_scale=4.0, generator=generator)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    generate(model, cond, tokens, cfg_scale=4.0, top_k=2000, generator=generator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"model": f"{kind}-{size}-{image_size}",
              "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6),
              "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
              "ms_per_token": round(1000 * seconds / tokens, 2)}
    if device.startswith("cuda"):
        result["peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--sizes", nargs="+", default=["B"], help="c2i GPT sizes: B L XL ...")
    parser.add_argument("--t2i", action="store_true", help="also the text model's XL at 256 px")
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    runs = [(size, "c2i", 384) for size in args.sizes] + ([("XL", "t2i", 256)] if args.t2i else [])
    results = []
    for size, kind, image_size in runs:
        results.append(measure(size, kind, image_size, min(args.tokens, (image_size // 16) ** 2), args.device, dtype))
        row = results[-1]
        print(f"{row['model']:>16}  {row['params_m']:>5} M params  {row['tokens_per_s']:>8} tokens/s  "
              f"{row['ms_per_token']:>7} ms/token" + (f"  peak {row['peak_gb']} GB" if "peak_gb" in row else ""))
    print("RESULT " + json.dumps({"device": args.device, "dtype": args.dtype, "runs": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
