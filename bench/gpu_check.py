"""One-command GPU check: the studio's speed on real-size models with random weights, no download.

Every model is built from its released config (the sizes the cards load) with random weights, on the
GPU, so nothing is fetched and the figures are the real shapes' cost:

- **Lumina-Next 2B** (Next-DiT 2304 x 24 layers, 32 heads / 8 KV heads; Gemma-2B; the SDXL VAE) at
  1024x1024, 30 steps, CFG 4, bf16, PyTorch SDPA: diffusers' `LuminaPipeline` called directly (its
  Euler), then the studio's image task on the same pipeline object (`tasks.get_task("image").run`,
  the call the worker makes): Euler at the same steps, the demo's default (midpoint), and with the
  studio's speed settings, `compile` (`runtime/loader.apply_speed_settings`) and fp8 storage (the
  loader's layerwise casting, `--fp8`). Lumina-Next has no step cache (`speed`): that is Wan's and
  Lumina-Image 2.0's.
- **Wan 2.1 1.3B** (umT5-XXL, the Wan VAE) at 832x480, 33 frames, the card's 50 steps and CFG 6:
  diffusers' `WanPipeline` directly, then the studio's video task with step caching off, balanced and
  fast (First Block Cache), and with flash-attn (`attention=flash`) when the package is installed.
- **The memory scheduler** (`runtime/memory.MemoryScheduler`) switching three real-size transformers
  (Lumina-Next 2B, Lumina-Image 2.0 2.6B, Wan 14B) under a device budget smaller than their sum:
  seconds per switch, GiB/s moved, peak memory, and whether an out-of-memory escaped (it must not).
- **Multi-GPU** (bench/gpu_multi.py), only with >= 2 CUDA devices (else a row saying it was skipped):
  Wan 1.3B with diffusers' context parallelism over 2 GPUs vs 1 GPU (max abs diff, s/step), and the
  scheduler over `cuda:0+cuda:1` loading a Lumina-Next 2B pipeline `device_map="balanced"`.

Each row gives the transformer calls it made (counted by a forward hook), seconds, seconds per call,
peak GPU memory and the ratio to diffusers' own call where there is one. It prints one table and writes
it as JSON (`--json`, default `gpu_check.json`). On one H100/H200 the whole check takes about 5-8
minutes; `--skip-compile` saves the compile warm-up.

`--dry-run` runs the same code on the CPU with tiny configs of the same classes (seconds): the tests
use it so the script cannot rot; its figures mean nothing.

    python bench/gpu_check.py                      # CUDA: the real check
    python bench/gpu_check.py --only lumina switch --json /tmp/check.json
    python bench/gpu_check.py --dry-run            # CPU: does it run
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from gpu_configs import DRY, REAL, Scale  # noqa: E402
from gpu_multi import check_multi  # noqa: E402

GiB = 2**30
CHECKS = ("lumina", "wan", "switch", "multi")
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234


# -- measuring ----------------------------------------------------------------------------------------

class Meter:
    """Seconds, peak memory and transformer calls of one timed block."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    @contextlib.contextmanager
    def measure(self, model: torch.nn.Module | None = None) -> Iterator[dict[str, Any]]:
        out: dict[str, Any] = {"calls": 0}
        handle = None
        if model is not None:
            def count(*_: Any) -> None:
                out["calls"] += 1
            handle = model.register_forward_pre_hook(count)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        try:
            yield out
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            out["s"] = time.perf_counter() - start
            out["peak_gib"] = torch.cuda.max_memory_allocated() / GiB if self.cuda else None
            if handle is not None:
                handle.remove()


def row(check: str, path: str, m: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"check": check, "path": path, "calls": None, "s": None, "s_per_call": None,
                         "peak_gib": None, "vs_diffusers": None, "note": ""}
    if m is not None:
        r.update(calls=m.get("calls") or None, s=m["s"], peak_gib=m.get("peak_gib"))
        if m.get("calls"):
            r["s_per_call"] = m["s"] / m["calls"]
    r.update(extra)
    return r


def failed(check: str, path: str, err: BaseException) -> dict[str, Any]:
    return row(check, path, note=f"FAILED: {type(err).__name__}: {str(err)[:200]}", failed=True)


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- building -------------------------------------------------------------------------------------------

def _built(device: str, dtype: torch.dtype, make: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """`make()` built directly on the device (random init runs there), in `dtype` except the modules the class
    keeps in float32 (as `from_pretrained(torch_dtype=...)` keeps them: Wan's time embedder, norms, RoPE)."""
    with torch.device(device):
        module = make()
    torch.nn.Module.to(module, dtype=dtype)  # the plain cast: diffusers' own `.to` warns about the kept modules
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    for name, sub in module.named_modules():
        if any(k in name.split(".") for k in keep):
            torch.nn.Module.to(sub, dtype=torch.float32)
    return module.eval().requires_grad_(False)


def build_lumina_next(scale: Scale, device: str) -> Any:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, LuminaNextDiT2DModel, LuminaPipeline
    from transformers import GemmaConfig, GemmaModel

    from studio.zoo.tiny_parts import tiny_gemma_tokenizer

    torch.manual_seed(SEED)
    dtype = scale.dtype
    transformer = _built(device, dtype, lambda: LuminaNextDiT2DModel(**scale.next_dit))
    for layer in transformer.layers:  # a trained model's text gates are open (a random one's start at 0)
        torch.nn.init.normal_(layer.gate, mean=0.5, std=0.1)
    torch.nn.init.normal_(transformer.pad_token, std=0.02)
    text = _built(device, dtype, lambda: GemmaModel(GemmaConfig(**scale.gemma)))
    vae = _built(device, dtype, lambda: AutoencoderKL(**scale.sdxl_vae))
    # The built-in tokenizer (a small vocabulary): its ids index the real-size embedding, so the text encoder
    # does the real amount of work for a prompt of the same token count.
    pipe = LuminaPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=vae,
                          text_encoder=text, tokenizer=tiny_gemma_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_wan(scale: Scale, device: str) -> Any:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from studio.zoo.tiny_parts import tiny_t5_tokenizer

    torch.manual_seed(SEED)
    transformer = _built(device, scale.dtype, lambda: WanTransformer3DModel(**scale.wan_dit))
    text = _built(device, scale.dtype, lambda: UMT5EncoderModel(UMT5Config(**scale.umt5)))
    vae = _built(device, torch.float32, lambda: AutoencoderKLWan(**scale.wan_vae))  # the cards keep it in fp32
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tiny_t5_tokenizer(), text_encoder=text, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- the studio's side ----------------------------------------------------------------------------------

def studio_parts(dry: bool) -> tuple[Any, Any]:
    """(card registry, settings) of a throwaway studio home."""
    from studio.settings import Settings
    from studio.zoo.cards import CardRegistry

    home = Path(tempfile.mkdtemp(prefix="studio-gpu-check-"))
    settings = Settings.load(home=home, model_cache=home / "cache", device="cpu" if dry else "cuda")
    return CardRegistry.load([settings.model_zoo_dir]), settings


def run_task(task_name: str, pipe: Any, card: Any, params: dict[str, Any]) -> Any:
    """The worker's call: the task's spec parsed and resolved against the card, then `task.run`."""
    from studio.tasks import get_task

    task = get_task(task_name)
    spec = task.spec_type.parse({"model": card.id, **params}).resolved(card)
    return task.run(pipe, spec, card, lambda step, total: None)


def check_lumina(scale: Scale, device: str, dry: bool, skip_compile: bool) -> list[dict[str, Any]]:
    from studio.runtime.loader import _store_in_fp8, apply_speed_settings

    cards, settings = studio_parts(dry)
    card = cards.get("lumina-next-sft")
    width, height, steps = scale.image
    name = f"Lumina-Next 2B {width}x{height} {steps} steps" + (" (dry run)" if dry else "")
    meter, rows = Meter(device), []
    pipe = build_lumina_next(scale, device)
    common = {"prompt": PROMPT, "negative_prompt": "", "width": width, "height": height, "steps": steps, "cfg": 4.0,
              "seed": SEED}
    if dry:  # the tiny model's native size is 128: no RoPE extrapolation
        card = card.model_copy(update={"resolutions": [f"{width}x{height}"], "min_size": 64})

    def diffusers_call() -> None:
        generator = torch.Generator(device).manual_seed(SEED)
        pipe(prompt=PROMPT, negative_prompt="", width=width, height=height, num_inference_steps=steps,
             guidance_scale=4.0, generator=generator, output_type="pil", clean_caption=False)

    def timed(path: str, fn: Callable[[], Any], warm: bool = not dry, **extra: Any) -> dict[str, Any]:
        try:
            if warm:
                fn()  # cuDNN / allocator warm-up, excluded
            with meter.measure(pipe.transformer) as m:
                fn()
            return row(name, path, m, **extra)
        except Exception as err:  # one failing path must not hide the others
            return failed(name, path, err)

    rows.append(timed("diffusers LuminaPipeline (Euler)", diffusers_call))
    base = rows[0]["s"]
    euler = dict(common, solver="euler")
    rows.append(timed("studio image task, Euler", lambda: run_task("image", pipe, card, euler)))
    rows.append(timed("studio image task, midpoint (default)", lambda: run_task("image", pipe, card, common)))
    if skip_compile or dry:
        why = " (dry run: no inductor on the CPU)" if dry else ""
        rows.append(row(name, "studio + compile", note=f"skipped{why}"))
    else:
        try:
            apply_speed_settings(pipe, replace(settings, compile=True))
            with meter.measure() as warm:
                run_task("image", pipe, card, euler)
            rows.append(timed("studio + compile, Euler", lambda: run_task("image", pipe, card, euler), warm=False,
                              note=f"compile + first image {warm['s']:.1f} s"))
        except Exception as err:
            rows.append(failed(name, "studio + compile", err))
        finally:  # undo it for the rows after: nn.Module.compile wraps the call in place
            pipe.transformer._compiled_call_impl = None
            torch._dynamo.reset()
    try:  # last: layerwise casting stores the weights in fp8 for good
        _store_in_fp8(pipe, card.model_copy(update={"fp8_ok": True}), replace(settings, fp8=True), scale.dtype)
        rows.append(timed("studio + fp8 storage, Euler", lambda: run_task("image", pipe, card, euler)))
    except Exception as err:
        rows.append(failed(name, "studio + fp8 storage", err))
    for r in rows:
        if base and r.get("s"):
            r["vs_diffusers"] = r["s"] / base
    return rows


def check_wan(scale: Scale, device: str, dry: bool) -> list[dict[str, Any]]:
    from studio.runtime.attention import apply_attention_backend, diffusers_models

    cards, _ = studio_parts(dry)
    card = cards.get("wan2.1-t2v-1.3b")
    width, height, frames, steps = scale.video
    name = f"Wan 2.1 1.3B {width}x{height}x{frames} {steps} steps" + (" (dry run)" if dry else "")
    if dry:
        card = card.model_copy(update={"resolutions": [f"{width}x{height}"], "min_size": 32})
    meter, rows = Meter(device), []
    pipe = build_wan(scale, device)
    common = {"prompt": PROMPT, "negative_prompt": "", "width": width, "height": height, "frames": frames,
              "steps": steps, "cfg": 6.0, "shift": 3.0, "seed": SEED}

    def diffusers_call() -> None:
        generator = torch.Generator(device).manual_seed(SEED)
        pipe(prompt=PROMPT, negative_prompt="", width=width, height=height, num_frames=frames,
             num_inference_steps=steps, guidance_scale=6.0, generator=generator, output_type="np")

    def timed(path: str, fn: Callable[[], Any], warm: bool) -> dict[str, Any]:
        try:
            if warm:
                fn()
            with meter.measure(pipe.transformer) as m:
                fn()
            return row(name, path, m)
        except Exception as err:
            return failed(name, path, err)

    rows.append(timed("diffusers WanPipeline", diffusers_call, warm=not dry))
    for speed in ("off", "balanced", "fast"):
        rows.append(timed(f"studio video task, step cache {speed}",
                          lambda speed=speed: run_task("video", pipe, card, dict(common, speed=speed)), warm=False))
    if not device.startswith("cuda") or importlib.util.find_spec("flash_attn") is None:
        rows.append(row(name, "studio + flash-attn", note="skipped: flash-attn needs CUDA and the flash_attn package"))
    else:
        try:
            taken = apply_attention_backend(pipe, "flash", device)
            rows.append(timed("studio + flash-attn, step cache off",
                              lambda: run_task("video", pipe, card, dict(common, speed="off")), warm=True))
            rows[-1]["note"] = f"flash on: {', '.join(taken) or 'none'}"
        except Exception as err:
            rows.append(failed(name, "studio + flash-attn", err))
        finally:
            for model in diffusers_models(pipe).values():
                with contextlib.suppress(Exception):
                    model.set_attention_backend("native")
    base = rows[0]["s"]
    for r in rows:
        if base and r.get("s"):
            r["vs_diffusers"] = r["s"] / base
    return rows


def check_switch(scale: Scale, device: str, dry: bool, rounds: int) -> list[dict[str, Any]]:
    """Three real-size transformers through the scheduler under a budget smaller than their sum."""
    import diffusers
    from accelerate import init_empty_weights
    from diffusers import DiffusionPipeline

    from studio.runtime.footprint import tensor_bytes
    from studio.runtime.memory import MemoryScheduler
    from studio.runtime.placement import torch_components
    from studio.zoo.cards import ModelCard

    class OnePipeline(DiffusionPipeline):
        def __init__(self, transformer: torch.nn.Module) -> None:
            super().__init__()
            self.register_modules(transformer=transformer)

    def build(cls_name: str, config: dict[str, Any]) -> torch.nn.Module:
        with init_empty_weights():
            model = getattr(diffusers, cls_name)(**config)
        # Random bytes in RAM without a minute of CPU init per model: uninitialised memory, then filled on the
        # device side only if it ever ran (it does not: a switch moves bytes).
        return model.to(dtype=scale.dtype).to_empty(device="cpu").eval().requires_grad_(False)

    sizes: dict[str, int] = {}
    loads: list[str] = []

    def loader(c: ModelCard) -> OnePipeline:
        loads.append(c.id)
        cls_name, config = scale.switch[c.id]
        return OnePipeline(build(cls_name, config))

    with torch.device("meta"):
        for name, (cls_name, config) in scale.switch.items():
            sizes[name] = tensor_bytes(getattr(diffusers, cls_name)(**config).to(dtype=scale.dtype))
    cards = {name: ModelCard.model_validate({
        "id": name, "title": name, "family": "bench", "tasks": ["image"], "source": {"builtin": name},
        "pipeline": "OnePipeline", "dtype": "bfloat16" if scale.dtype == torch.bfloat16 else "float32",
        "memory_gb": sizes[name] / GiB, "license": "n/a"}) for name in scale.switch}
    ordered = sorted(sizes.values())
    budget = int(ordered[-1] * 1.05 + ordered[0] * 0.5)  # the largest alone, never all three
    check = f"scheduler: 3 transformers {sum(sizes.values()) / GiB:.1f} GiB, budget {budget / GiB:.1f} GiB" + (
        " (dry run)" if dry else "")
    sched = MemoryScheduler(loader, device=device, device_budget=budget, ram_budget=None)
    meter = Meter(device)
    times: dict[str, list[float]] = {name: [] for name in cards}
    escaped: list[str] = []
    peak = 0.0
    for _ in range(rounds):
        for name, c in cards.items():
            try:
                with meter.measure() as m, sched.acquire(c) as lease:
                    on = {p.device.type for module in torch_components(lease.pipeline).values()
                          for p in module.parameters()}
                    if on != {torch.device(device).type}:
                        raise RuntimeError(f"{name} runs with weights on {sorted(on)}, not all on {device}")
                times[name].append(m["s"])
                peak = max(peak, m["peak_gib"] or 0.0)
            except torch.OutOfMemoryError as err:
                escaped.append(f"{name}: {err}")
            except Exception as err:
                escaped.append(f"{name}: {type(err).__name__}: {err}")
    sched.free_all()
    free()
    rows = []
    for name, t in times.items():
        later = t[1:] or t  # the first acquire builds the model: its load is not a switch
        med = sorted(later)[len(later) // 2] if later else None
        rows.append(row(check, f"switch to {name} ({sizes[name] / GiB:.2f} GiB)", None, s=med,
                        peak_gib=peak if device.startswith("cuda") else None,
                        note=(f"{sizes[name] / GiB / med:.1f} GiB/s; first load {t[0]:.2f} s" if med and t else "")))
    rows.append(row(check, "out-of-memory escaping / errors", None, note="; ".join(escaped)[:300] or "none",
                    failed=bool(escaped), loads=len(loads)))
    return rows


# -- output ---------------------------------------------------------------------------------------------

def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def print_table(rows: list[dict[str, Any]]) -> None:
    header = f"{'check':<44} {'path':<40} {'calls':>5} {'s':>8} {'s/call':>8} {'peak GiB':>8} {'vs diff.':>8}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['check'][:44]:<44} {r['path'][:40]:<40} {_fmt(r['calls'], 'd'):>5} {_fmt(r['s'], '.3f'):>8} "
              f"{_fmt(r['s_per_call'], '.4f'):>8} {_fmt(r['peak_gib'], '.1f'):>8} "
              f"{_fmt(r['vs_diffusers'], '.3f'):>8}  {r['note']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny configs of the same classes: does it run")
    ap.add_argument("--only", nargs="+", choices=CHECKS, default=list(CHECKS))
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="scheduler rounds through the three models")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        ap.error("no CUDA device here: run it on a GPU machine, or with --dry-run to check the script on the CPU")
    device = "cpu" if args.dry_run else "cuda"
    scale = DRY if args.dry_run else REAL
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    if "lumina" in args.only:
        rows += check_lumina(scale, device, args.dry_run, args.skip_compile)
        free()  # its pipeline went with the function
    if "wan" in args.only:
        rows += check_wan(scale, device, args.dry_run)
        free()
    if "switch" in args.only:
        rows += check_switch(scale, device, args.dry_run, max(2, args.rounds))
        free()
    if "multi" in args.only:
        rows += check_multi(args.dry_run)
    import diffusers

    report = {
        "bench": "gpu_check", "dry_run": args.dry_run, "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "diffusers": diffusers.__version__,
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        "total_s": time.perf_counter() - started, "rows": rows,
    }
    print(f"gpu check on {report['gpu']}  torch {report['torch']}  diffusers {report['diffusers']}  "
          f"{'DRY RUN (tiny configs on the CPU: the figures mean nothing)' if args.dry_run else ''}")
    print_table(rows)
    print(f"total {report['total_s']:.0f} s")
    args.json.write_text(json.dumps(report, indent=1))
    print(f"written: {args.json}")
    print("RESULT " + json.dumps({k: v for k, v in report.items() if k != "rows"} | {"rows": len(rows)}))
    return 1 if any(r.get("failed") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
