"""Wan 2.1 1.3B and 14B on a small GPU: weight bytes per placement x transformer quantization, seconds
per step, and which mode fits an 8 / 12 / 16 / 24 GB card.

Everything is built from the released configs with random weights, no download. Bytes are exact:
counted from each parameter of the real-size models on the meta device (the Wan DiT, umT5-XXL, the Wan
VAE) under each storage, with the rules the loaders follow (checked against a materialized, quantized
1.3B where RAM allows, `--check`):
- none: bf16 everywhere (the VAE in float32, as the cards load it);
- int8 (torchao Int8WeightOnlyConfig): each Linear weight 1 byte + 5 bytes a row (float32 scale, int8 zero
  point); fp8 (Float8WeightOnlyConfig): 1 byte + 4 a row; the modules Wan keeps in float32 under a
  quantizer (time embedder, modulation tables, norms) in float32;
- GGUF Q8_0 / Q4_0: each Linear weight whose rows split into blocks of 32 at 34 / 18 bytes a block
  (8.5 / 4.5 bits a weight), the rest bf16 (float32 where kept) once loaded.
Only the transformer is quantized; the text encoder (11.4 GB) and the VAE are as they are.

Placements are the scheduler's (runtime/placement.py) with its footprint rules (runtime/footprint.py):
full = everything; model_offload = the largest component; group_offload = the largest block of a
component plus its non-block layers; sequential_offload = the largest single layer.

Timing: one transformer forward (half a CFG step) of the 1.3B, materialized. On a CPU that is done at a
tiny token count (1 latent frame of 8x8 = 16 video tokens, 16 text tokens, float32 activations) so it
finishes in seconds: the figures compare modes, they are not real-size step times. fp8 needs CUDA and is
not timed on a CPU. GGUF is timed with `--gguf` (writes a temporary 1.3B GGUF first, a minute or two).
On CUDA (`--device cuda`) the 832x480x81 token count is used (32,760 video tokens, 512 text tokens, bf16)
and torch.cuda.max_memory_allocated is printed per mode.

    python bench/video_memory.py                  # CPU: bytes, fits table, 1.3B none/int8 timing
    python bench/video_memory.py --check --gguf   # + the formulas checked on the materialized 1.3B, GGUF timing
    python bench/video_memory.py --device cuda    # real token counts, fp8, peak memory
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import tempfile
import time
from pathlib import Path

import torch

GiB = 2**30
WAN = {
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
}
WAN_COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
MODES = ("none", "int8", "fp8", "Q8_0", "Q4_0")
PLACEMENTS = ("full", "model_offload", "group_offload", "sequential_offload")
GPUS_GB = (8, 12, 16, 24)
CUDA_CONTEXT_GB = 0.5  # what the CUDA context and allocator take before any tensor
# Working memory at 832x480x81 on top of the weights, as the scheduler reserves it (VideoTask.working_bytes:
# the cards' working_gb_per_mpx, 1.0 for both Wan cards, per latent "megapixel" = 832*480*81/2**20/16).
WORKING_GB = {size: 1.0 * 832 * 480 * 81 / 2**20 / 16 for size in WAN}


def build_meta(size: str):
    """(transformer, text encoder, VAE) at real size on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with init_empty_weights():
        transformer = WanTransformer3DModel(**WAN_COMMON, **WAN[size])
        text = UMT5EncoderModel(UMT5Config(vocab_size=256384, d_model=4096, d_ff=10240, d_kv=64, num_heads=64,
                                           num_layers=24, feed_forward_proj="gated-gelu"))
        vae = AutoencoderKLWan()
    text.tie_weights()  # as loading the checkpoint does: the encoder's embedding is the shared one
    return transformer, text, vae


def _kept_fp32(name: str, keep: list[str]) -> bool:
    return any(re.search(rf"(^|\.){re.escape(k)}(\.|$)", name) for k in keep)


def param_bytes(module: torch.nn.Module, mode: str, keep: list[str], base: int = 2) -> dict[int, int]:
    """{id(parameter): bytes} for every parameter and buffer of `module` stored as `mode`."""
    sizes = {}
    linears = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Linear)}
    for name, p in module.named_parameters():
        n = p.numel()
        if mode == "none":
            sizes[id(p)] = n * base
        elif _kept_fp32(name, keep):
            sizes[id(p)] = n * 4
        elif id(p) in linears and mode in ("int8", "fp8"):
            sizes[id(p)] = n + p.shape[0] * (5 if mode == "int8" else 4)
        elif id(p) in linears and p.shape[1] % 32 == 0 and mode in ("Q8_0", "Q4_0"):
            sizes[id(p)] = n // 32 * (34 if mode == "Q8_0" else 18)
        else:
            sizes[id(p)] = n * base
    for b in module.buffers():
        sizes[id(b)] = b.numel() * b.element_size()
    return sizes


def peaks(module: torch.nn.Module, mode: str, keep: list[str], base: int) -> dict[str, int]:
    """Bytes on the device at the peak under each placement, for this one component (footprint.py's rules)."""
    sizes = param_bytes(module, mode, keep, base)

    def ids(m: torch.nn.Module, recurse: bool = True) -> set[int]:
        return {id(t) for t in (*m.parameters(recurse=recurse), *m.buffers(recurse=recurse))}

    def size(m: torch.nn.Module, recurse: bool = True) -> int:
        return sum(sizes[i] for i in ids(m, recurse))

    rest, inner = ids(module, recurse=False), 0  # a tied weight (T5's embedding) counted once
    for child in module.children():
        if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)):
            inner = max(inner, max((size(block) for block in child), default=0))
        else:
            rest |= ids(child)
    rest_bytes = sum(sizes[i] for i in rest)
    leaf = max(size(m, recurse=False) for m in module.modules())
    return {"full": size(module), "model_offload": size(module), "group_offload": rest_bytes + inner,
            "sequential_offload": leaf}


def plan(size: str) -> dict[str, dict[str, int]]:
    """{mode: {placement: bytes on the device at the peak}} for the whole pipeline."""
    transformer, text, vae = build_meta(size)
    keep = list(getattr(transformer, "_keep_in_fp32_modules", None) or [])
    result = {}
    for mode in MODES:
        parts = [peaks(transformer, mode, keep, 2), peaks(text, "none", [], 2), peaks(vae, "none", [], 4)]
        result[mode] = {"full": sum(p["full"] for p in parts),
                        **{pl: max(p[pl] for p in parts) for pl in PLACEMENTS[1:]},
                        "transformer": parts[0]["full"]}
    return result


def gb(n: float) -> str:
    return f"{n / GiB:6.2f}"


def print_plans(plans: dict[str, dict]) -> None:
    print("Weights on the device at the peak, GiB (exact from the configs; transformer quantized, umT5-XXL bf16,"
          " VAE float32)")
    print(f"{'model':6} {'quant':6} {'transformer':>11} " + " ".join(f"{p:>18}" for p in PLACEMENTS))
    for size, by_mode in plans.items():
        for mode, row in by_mode.items():
            cells = " ".join(f"{gb(row[p]):>18}" for p in PLACEMENTS)
            print(f"{size:6} {mode:6} {gb(row['transformer']):>11} {cells}")
    print()


def print_fits(plans: dict[str, dict]) -> None:
    print(f"What fits (weights at the peak + the scheduler's working memory for 832x480x81, {WORKING_GB['1.3B']:.2f}"
          " GiB, + 0.5 GB CUDA context); the first placement that fits is what the scheduler picks. fp8 needs an"
          " fp8 GPU (RTX 40xx / L4 / H100).")
    for size, by_mode in plans.items():
        for gpu in GPUS_GB:
            budget = (gpu - CUDA_CONTEXT_GB) * GiB - WORKING_GB[size] * GiB
            fits = []
            for mode, row in by_mode.items():
                placement = next((p for p in PLACEMENTS if row[p] <= budget), None)
                fits.append(f"{mode}: {placement or 'no'}")
            print(f"  Wan {size:4} on {gpu:2} GB: " + ", ".join(fits))
    print()


def materialize_13b(dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device("cpu"):
        model = WanTransformer3DModel(**WAN_COMMON, **WAN["1.3B"]).to(dtype)
    return model.eval()


def quantized(model, mode: str):
    from torchao.quantization import quantize_

    from studio.runtime.quantize import torchao_config

    quantize_(model, torchao_config(mode))
    return model


def check_formulas() -> None:
    """The int8 rule against torchao on the materialized 1.3B (bf16), parameter by parameter, as the
    footprint counts them (the RoPE buffers are left out: they are not weights and keep their own dtype)."""
    from studio.runtime.footprint import storage_bytes

    model = materialize_13b(torch.bfloat16)
    plain = sum(storage_bytes(p) for p in model.parameters())
    quantized(model, "int8")
    measured = sum(storage_bytes(p) for p in model.parameters())
    # quantize_ after load (native path) keeps nothing in float32: the rule without Wan's float32 modules.
    meta = build_meta("1.3B")[0]
    rule = param_bytes(meta, "int8", [], 2)
    formula = sum(rule[id(p)] for p in meta.parameters())
    verdict = "equal" if measured == formula else f"differ by {measured - formula} bytes"
    print(f"check, 1.3B transformer weights: bf16 {gb(plain)} GiB, int8 measured {gb(measured)} GiB ({measured} B),"
          f" rule {formula} B: {verdict}; int8 / bf16 = {measured / plain:.4f}")
    del model
    gc.collect()


def inputs(device: str, dtype: torch.dtype, real: bool):
    frames, h, w, text = (21, 60, 104, 512) if real else (1, 8, 8, 16)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, frames, h, w, generator=g).to(device, dtype)
    context = torch.randn(1, text, 4096, generator=g).to(device, dtype)
    return latents, context, torch.tensor([500.0], device=device)


def time_forward(model, device: str, dtype: torch.dtype, real: bool, repeats: int) -> tuple[float, int | None]:
    latents, context, t = inputs(device, dtype, real)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(hidden_states=latents, timestep=t, encoder_hidden_states=context, return_dict=False)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(hidden_states=latents, timestep=t, encoder_hidden_states=context, return_dict=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return seconds, peak


def gguf_model(quant: str, dtype: torch.dtype, folder: Path):
    """The 1.3B as a community GGUF file (original key names), loaded back through diffusers' GGUF loader."""
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    from studio.zoo.builtin_gguf import wan_original_name, write_gguf

    model = materialize_13b(torch.float32)
    model.save_config(folder)
    path = folder / f"wan-1.3b-{quant}.gguf"
    write_gguf({wan_original_name(k): v for k, v in model.state_dict().items()}, path, quant, "wan")
    del model
    gc.collect()
    return WanTransformer3DModel.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                  torch_dtype=dtype,
                                                  quantization_config=GGUFQuantizationConfig(compute_dtype=dtype))


def timings(device: str, repeats: int, with_gguf: bool) -> None:
    from studio.runtime.footprint import tensor_bytes

    real = device.startswith("cuda")
    dtype = torch.bfloat16 if real else torch.float32
    tokens = "32,760 video + 512 text tokens (832x480x81), bf16" if real else \
        "16 video + 16 text tokens (a tiny count: CPU), float32 activations"
    print(f"Wan 1.3B transformer, one forward on {device}, {tokens}:")
    modes = ["none", "int8"] + (["fp8"] if real else []) + (["Q8_0", "Q4_0"] if with_gguf else [])
    for mode in modes:
        with tempfile.TemporaryDirectory() as tmp:
            if mode in ("Q8_0", "Q4_0"):
                model = gguf_model(mode, dtype, Path(tmp))
            else:
                model = materialize_13b(dtype)
                if mode != "none":
                    model = quantized(model, mode)
            model = model.to(device)
            seconds, peak = time_forward(model, device, dtype, real, repeats)
            memory = f", peak allocated {gb(peak)} GiB" if peak is not None else ""
            print(f"  {mode:5} {seconds:7.3f} s/forward, weights {gb(tensor_bytes(model))} GiB{memory}")
            del model
            gc.collect()
            if real:
                torch.cuda.empty_cache()
    if not real:
        print("  fp8: not timed (its float8 matmuls need a CUDA GPU with fp8; the studio refuses it on a CPU)")
        if not with_gguf:
            print("  GGUF: run with --gguf to time it (writes a temporary 1.3B GGUF first)")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per mode (after one warm-up)")
    parser.add_argument("--no-time", action="store_true", help="bytes and the fits table only")
    parser.add_argument("--check", action="store_true", help="check the int8 formula on the materialized 1.3B")
    parser.add_argument("--gguf", action="store_true", help="also time GGUF Q8_0 / Q4_0 (writes temporary files)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    start = time.perf_counter()
    plans = {size: plan(size) for size in WAN}
    print_plans(plans)
    print_fits(plans)
    if args.check:
        check_formulas()
    if not args.no_time:
        timings(args.device, args.repeats, args.gguf)
    print(f"({math.ceil(time.perf_counter() - start)} s)")


if __name__ == "__main__":
    main()
