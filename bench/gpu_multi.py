"""The GPU check's multi-GPU rows (bench/gpu_check.py --only multi), with two or more CUDA devices:

- **context parallel**: the real-size Wan 2.1 1.3B transformer (random weights from the released config) at
  832x480, 33 frames, one step's forward, on one GPU and then with diffusers' context parallelism (Ulysses,
  `runtime/multi_gpu.enable_context_parallel`) over two: two processes (NCCL), the same weights and input on
  each; max abs diff of the CP output from the one-GPU output, and seconds per step each way.
- **balanced**: a real-size Lumina-Next 2B pipeline saved to disk, given to a `MemoryScheduler` over
  `cuda:0+cuda:1` whose per-GPU budgets are 70% of the pipeline: it must choose `balanced`, the loader gets
  `device_map="balanced"` and the scheduler's `max_memory`; the image is compared with a one-GPU run.

With fewer than two CUDA devices each row says it was skipped and why. `--dry-run` runs the context-parallel
row on the CPU over gloo with a tiny config (and one line of diffusers patched: see `_rank`), so the
two-process path cannot rot; the balanced row needs GPUs and is skipped there.

This file is also the rank worker: `python bench/gpu_multi.py --cp-rank R --port P --out F [--dry-run]`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from gpu_configs import BALANCED_CALL, BALANCED_SHARE, CP_STEPS, DRY, REAL, Scale  # noqa: E402

GiB = 2**30


def _row(check: str, path: str, s: float | None = None, calls: int | None = None, **extra: Any) -> dict[str, Any]:
    r = {"check": check, "path": path, "calls": calls, "s": s, "s_per_call": s / calls if s and calls else None,
         "peak_gib": None, "vs_diffusers": None, "note": ""}
    return r | extra


def _skipped(check: str, path: str, why: str) -> dict[str, Any]:
    return _row(check, path, note=f"skipped: {why}")


def _wan_input(scale: Scale, device: str) -> dict[str, Any]:
    width, height, frames, _steps = scale.video
    g = torch.Generator("cpu").manual_seed(7)
    latent = torch.randn(1, scale.wan_dit["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8, generator=g)
    text = torch.randn(1, 512 if scale is REAL else 8, scale.wan_dit["text_dim"], generator=g)
    return dict(hidden_states=latent.to(device, scale.dtype), encoder_hidden_states=text.to(device, scale.dtype),
                timestep=torch.tensor([999], device=device), return_dict=False)


def _timed_steps(model: torch.nn.Module, inputs: dict[str, Any], cuda: bool) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        out = model(**inputs)[0]  # warm-up (and the output compared)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(CP_STEPS):
            model(**inputs)
        if cuda:
            torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / CP_STEPS


def _rank(rank: int, port: int, out: Path, dry: bool) -> None:
    """One rank of the context-parallel row: the one-device step, then the CP step over the two ranks."""
    import torch.distributed as dist
    from diffusers import WanTransformer3DModel

    from studio.runtime import multi_gpu

    scale = DRY if dry else REAL
    device = "cpu" if dry else f"cuda:{rank}"
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if dry:
        # diffusers' ModelMixin._resolve_parallel_config numbers the rank's device `rank % device_count()`,
        # a ZeroDivisionError where there is no accelerator: answered as 1 for the CPU dry run only.
        torch.accelerator.device_count = lambda: 1
    else:
        torch.cuda.set_device(rank)
    dist.init_process_group("gloo" if dry else "nccl", rank=rank, world_size=2)
    torch.manual_seed(1234)  # the same random weights in both ranks: built on the CPU, then moved
    model = WanTransformer3DModel(**scale.wan_dit).to(device, scale.dtype).eval().requires_grad_(False)
    inputs = _wan_input(scale, device)
    single, single_s = _timed_steps(model, inputs, not dry)
    if not dry:
        torch.cuda.reset_peak_memory_stats()
    multi_gpu.enable_context_parallel(model, 2)
    parallel, parallel_s = _timed_steps(model, inputs, not dry)
    report = {"rank": rank, "single_s": single_s, "parallel_s": parallel_s,
              "diff": (parallel.float() - single.float()).abs().max().item(),
              "scale": single.float().abs().max().item(),
              "peak_gib": None if dry else torch.cuda.max_memory_allocated() / GiB}
    out.write_text(json.dumps(report))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_context_parallel(dry: bool) -> list[dict[str, Any]]:
    scale = DRY if dry else REAL
    width, height, frames, _ = scale.video
    check = f"Wan 2.1 1.3B context parallel {width}x{height}x{frames}" + (" (dry run)" if dry else "")
    found = torch.cuda.device_count()
    if not dry and found < 2:
        return [_skipped(check, "CP over 2 GPUs vs 1 GPU", f"needs >= 2 CUDA devices (found {found})")]
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{rank}.json" for rank in (0, 1)]
        args = [[sys.executable, __file__, "--cp-rank", str(rank), "--port", str(port), "--out", str(files[rank])]
                + (["--dry-run"] if dry else []) for rank in (0, 1)]
        procs = [subprocess.Popen(a, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for a in args]
        logs = [p.communicate(timeout=900)[0] for p in procs]
        if any(p.returncode for p in procs):
            tail = " | ".join(line for log in logs for line in log.strip().splitlines()[-2:])
            return [_row(check, "CP over 2 GPUs vs 1 GPU", note=f"FAILED: {tail[:300]}", failed=True)]
        reports = [json.loads(f.read_text()) for f in files]
    first = reports[0]
    diff = max(r["diff"] for r in reports)
    return [
        _row(check, "1 GPU, one step", s=first["single_s"] * CP_STEPS, calls=CP_STEPS),
        _row(check, "context parallel (Ulysses) over 2", s=first["parallel_s"] * CP_STEPS, calls=CP_STEPS,
             vs_diffusers=first["parallel_s"] / first["single_s"], peak_gib=first["peak_gib"],
             max_abs_diff=diff, note=f"max abs diff {diff:.3g} (output max {first['scale']:.3g}); "
                                     "vs diff. = CP s/step over 1-GPU s/step"),
    ]


def check_balanced(dry: bool) -> list[dict[str, Any]]:
    check = "Lumina-Next 2B pipeline balanced over 2 GPUs"
    found = torch.cuda.device_count()
    if dry or found < 2:
        return [_skipped(check, "scheduler -> balanced", f"needs >= 2 CUDA devices (found {found})")]
    from diffusers import LuminaPipeline

    from gpu_check import build_lumina_next
    from studio.runtime.footprint import Footprint
    from studio.runtime.memory import MemoryScheduler
    from studio.zoo.cards import CardRegistry
    from studio.settings import REPO_ROOT

    rows: list[dict[str, Any]] = []
    card = CardRegistry.load([REPO_ROOT / "model_zoo"]).get("tiny-lumina-next").model_copy(update={"id": "next-2b"})
    call = dict(BALANCED_CALL)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_lumina_next(REAL, "cuda:0")
        total = Footprint.measure(pipe).total
        pipe.save_pretrained(tmp)
        del pipe
        torch.cuda.empty_cache()
        one = LuminaPipeline.from_pretrained(tmp, dtype=REAL.dtype).to("cuda:0")
        start = time.perf_counter()
        reference = one(**call, generator=torch.Generator("cpu").manual_seed(3)).images
        single_s = time.perf_counter() - start
        del one
        torch.cuda.empty_cache()
        loads: list[dict[str, Any]] = []

        def loader(_card: Any, device_map: str | None = None, max_memory: dict | None = None) -> Any:
            loads.append({"device_map": device_map, "max_memory": max_memory})
            return LuminaPipeline.from_pretrained(tmp, dtype=REAL.dtype, device_map=device_map,
                                                  max_memory=max_memory)

        member = int(total * BALANCED_SHARE)
        s = MemoryScheduler(loader, device="cuda:0+cuda:1", member_budgets=[member, member], ram_budget=0)
        with s.acquire(card) as lease:
            start = time.perf_counter()
            images = lease.pipeline(**call, generator=torch.Generator("cpu").manual_seed(3)).images
            spread_s = time.perf_counter() - start
            placement, where = lease.placement.value, getattr(lease.pipeline, "hf_device_map", None)
            per_member = s.member_used()
        diff = (images.float().cpu() - reference.float().cpu()).abs().max().item()
        rows.append(_row(check, "1 GPU, full", s=single_s, calls=call["num_inference_steps"]))
        rows.append(_row(check, f"scheduler chose {placement}", s=spread_s, calls=call["num_inference_steps"],
                         vs_diffusers=spread_s / single_s, max_abs_diff=diff, failed=placement != "balanced",
                         note=f"map {where}; books per GPU {[round(b / GiB, 1) for b in per_member]} GiB; "
                              f"max_memory {loads[-1]['max_memory']}; image max abs diff {diff:.3g}"))
        s.free_all()
    return rows


def check_multi(dry: bool) -> list[dict[str, Any]]:
    rows = []
    for check in (check_context_parallel, check_balanced):
        try:
            rows += check(dry)
        except Exception as err:  # a row that says so: the rest of the GPU check still reports
            rows.append(_row(check.__name__, "-", note=f"FAILED: {type(err).__name__}: {str(err)[:200]}",
                             failed=True))
    for r in rows:
        if r["note"].startswith("skipped"):
            print(f"multi-GPU: {r['check']}: {r['note']}")
    return rows


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="a rank of the GPU check's context-parallel row")
    ap.add_argument("--cp-rank", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    _rank(a.cp_rank, a.port, a.out, a.dry_run)
