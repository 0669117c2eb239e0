"""Lumina-T2I's 5B Flag-DiT: seconds per model evaluation (one CFG pair, as a 1-image job makes it).

Random weights at real width (3072, 32 heads, SwiGLU 8192, qk-norm, 4096-wide caption features of
LLaMA-2-7B), no download. One evaluation is the demo's: the latent twice (prompt and empty
negative), 128 caption tokens, the 1-D RoPE over rows with their eol tokens, proportional
attention. On CUDA the whole 32-layer model runs and the peak memory is printed; on a CPU a full
evaluation at 1024^2 takes many minutes, so `--layers` builds fewer layers of the same shape and the
full model's time is extrapolated (layers are identical in cost; embedding and output are not
counted separately), said so in the output.

    python bench/flagdit.py                                  # CPU, bfloat16, 1024^2, 1 layer
    python bench/flagdit.py --device cuda                    # all 32 layers, peak memory
    python bench/flagdit.py --device cuda --sizes 1024 1664 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from studio.engines.lumina_t2i.model import CONFIGS, FlagDiT, rope_table
from studio.engines.lumina_t2i.pipeline import base_seqlen

FULL_LAYERS = CONFIGS["DiT_Llama_5B_patch2"].n_layers


def build(layers: int, device: str, dtype: torch.dtype) -> FlagDiT:
    config = CONFIGS["DiT_Llama_5B_patch2"].with_file(n_layers=layers)
    with torch.device("meta"):
        model = FlagDiT(config)
    model = model.to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.02, generator=generator)
    return model.to(dtype).eval()


def evaluate(model: FlagDiT, size: int, device: str, dtype: torch.dtype, text_tokens: int = 128) -> None:
    latent = size // 8
    x = torch.randn(2, 4, latent, latent, device=device, dtype=dtype)
    t = torch.full((2,), 0.5, device=device)
    feats = torch.randn(2, text_tokens, model.config.cap_feat_dim, device=device, dtype=dtype)
    mask = torch.ones(2, text_tokens, dtype=torch.bool, device=device)
    mask[1, 2:] = False  # the empty negative: BOS and EOS
    freqs = rope_table(model.config.head_dim, model.sequence_length(latent, latent), device=device)
    model(x, t, feats, mask, freqs, base_seqlen(1024))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1024])
    parser.add_argument("--layers", type=int, default=None, help=f"layers to build (default: {FULL_LAYERS} on "
                                                                 "CUDA, 1 on a CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed evaluations (default 3 on CUDA, 1 on CPU)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    layers = args.layers or (FULL_LAYERS if cuda else 1)
    repeats = args.repeats or (3 if cuda else 1)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = build(layers, args.device, dtype)
    params = sum(p.numel() for p in model.parameters())
    print(f"Flag-DiT {layers}/{FULL_LAYERS} layers ({params / 1e9:.2f}B parameters built), {args.device} "
          f"{args.dtype}, built in {time.perf_counter() - started:.1f} s")
    results = []
    with torch.no_grad():
        for size in args.sizes:
            evaluate(model, size, args.device, dtype)  # warm-up (kernels, allocator)
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            for _ in range(repeats):
                evaluate(model, size, args.device, dtype)
            if cuda:
                torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / repeats
            full = seconds * FULL_LAYERS / layers
            tokens = model.sequence_length(size // 8, size // 8)
            line = f"  {size}x{size}: {tokens} tokens x 2 (CFG), {seconds:.3f} s per evaluation of {layers} layers"
            if layers != FULL_LAYERS:
                line += f" -> about {full:.1f} s for all {FULL_LAYERS} (extrapolated)"
            row = {"size": size, "layers": layers, "seconds": round(seconds, 4), "full_model_seconds": round(full, 3),
                   "extrapolated": layers != FULL_LAYERS}
            if cuda:
                peak = torch.cuda.max_memory_allocated() / 2**30
                line += f", peak memory {peak:.2f} GiB"
                row["peak_gib"] = round(peak, 2)
            print(line)
            results.append(row)
    print("RESULT " + json.dumps({"device": args.device, "dtype": args.dtype, "results": results}))


if __name__ == "__main__":
    main()
