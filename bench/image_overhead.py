"""Per-job overhead of the studio's image path over a direct diffusers pipeline call.

Both paths run in one process on the same built-in tiny model (same weights from the same cache),
with the same prompt, seed, size, steps, CFG and scheduler shift, so they do identical math:

- direct: `load_pipeline(card, settings)` then the call `ImageTask.run` makes: `pipe(...)`, or for
  Lumina-Next its own sampler (`engines.lumina_next.sample`, with the card's solver, shift, RoPE and
  CFG settings), since diffusers' pipeline only has Euler (the raw floor);
- studio: `Studio.run("image", params)` end to end: validation, queue, worker thread, memory
  scheduler (model resident after warmup), pipeline, the saver's PNG with metadata and thumbnail,
  history rows; with live previews off, since the direct call makes none (the goal is this path's);
- previews: the same job as shipped, with live previews every `Settings.preview_every` steps
  (report only: a feature's cost, which bench/preview_overhead.py measures on its own).

Both run off the main thread: the direct call in a dedicated thread of its own, the studio's job in
its worker. (In the main thread glibc hands the main arena's freed memory back to the system after
each job and the next one faults it in again: ~185,000 page faults and ~350 ms of system time a job
on a 2-core box, which made the studio look faster than the direct call.) The two paths alternate
each repeat and warmup runs are excluded. For each path the wall time and the process CPU time
(every thread: the main thread only waits) are printed, median and min, with the studio/direct
ratios and the overhead per job, then one `RESULT {json}` line with its `measures`. The two images
must be pixel-identical, else the script exits non-zero.

    python bench/image_overhead.py                        # tiny-lumina-next, 20 steps, 256x256
    python bench/image_overhead.py --model tiny-lumina2 --steps 4 --repeats 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from studio.engines.lumina_next import LuminaNextOptions, sample as lumina_sample  # noqa: E402
from studio.runtime.loader import load_pipeline  # noqa: E402
from studio.services import Studio  # noqa: E402
from studio.settings import Settings  # noqa: E402
from studio.families import FAMILIES  # noqa: E402
from studio.tasks.image import ImageSpec  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234


def timed(paths: dict[str, Callable[[], Any]], warmup: int, repeats: int
          ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Wall and process-CPU seconds per call of each path, alternating them each repeat so machine
    drift hits both alike. `warmup` untimed calls of each come first; the last result of each is
    returned too."""
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in paths.items():
            results[name] = fn()
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            results[name] = fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu, results


def off_main_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run in one dedicated non-main thread (as the studio's worker is), the caller waiting."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-direct")
    return lambda: pool.submit(fn).result()


def measure(name: str, value: float, unit: str, goal: str = "", met: bool | None = None) -> dict[str, Any]:
    return {"measure": name, "value": round(value, 4), "unit": unit, "goal": goal, "met": met}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-lumina-next", choices=["tiny-lumina-next", "tiny-lumina2"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--home", type=Path, default=None, help="studio home (default: a fresh temporary dir)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")

    home = args.home or Path(tempfile.mkdtemp(prefix="studio-bench-"))
    settings = Settings.load(home=home, model_cache=home / "cache")
    studio = Studio(settings).start()
    try:
        card = studio.cards.get(args.model)
        cfg, shift = float(card.defaults.get("cfg", 4.0)), card.defaults.get("shift")

        pipe = load_pipeline(card, settings)
        extra = {"clean_caption": False} if type(pipe).__name__ == "LuminaPipeline" else {}

        defaults = ImageSpec.defaults_for(card)

        def direct() -> Image.Image:
            generator = torch.Generator("cpu").manual_seed(SEED)
            if FAMILIES.of(card).name == "lumina-next":  # its own sampler, with its family's defaults
                names = {f.name for f in dataclasses.fields(LuminaNextOptions)} - {"steps", "cfg"}
                opts = LuminaNextOptions(steps=args.steps, cfg=cfg, **{k: defaults[k] for k in names})
                return lumina_sample(pipe, prompt=PROMPT, negative_prompt="", width=width, height=height,
                                     num_images=1, generator=generator, opts=opts)[0][0]
            if shift is not None:  # as ImageTask.run does, per job
                pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, shift=shift)
            return pipe(prompt=PROMPT, negative_prompt="", width=width, height=height,
                        num_inference_steps=args.steps, guidance_scale=cfg,
                        generator=generator, output_type="pil", **extra).images[0]

        params = {"model": card.id, "prompt": PROMPT, "negative_prompt": "", "width": width, "height": height,
                  "steps": args.steps, "cfg": cfg, "seed": SEED, **({"shift": shift} if shift is not None else {})}

        def via_studio(preview_every: int):
            def run():
                studio.jobs.preview_every = preview_every
                job = studio.run("image", params)
                if job.error or not job.outputs:
                    raise SystemExit(f"studio job failed: {job.error}")
                return job
            return run

        # The job path alone (the direct call makes no previews), and as shipped: live previews every
        # `settings.preview_every` steps, a feature with its own cost (bench/preview_overhead.py).
        paths = {"direct": off_main_thread(direct), "studio": via_studio(0)}
        if settings.preview_every:
            paths["previews"] = via_studio(settings.preview_every)
        wall, cpu, results = timed(paths, args.warmup, args.repeats)
        direct_image, job = results["direct"], results["studio"]

        with Image.open(job.outputs[0].path) as png:
            studio_pixels = np.asarray(png.convert("RGB"))
        match = np.array_equal(np.asarray(direct_image.convert("RGB")), studio_pixels)
    finally:
        studio.close()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    rows = {path: {"wall": wall[path], "cpu": cpu[path]} for path in wall}
    med = {(p, k): statistics.median(v) for p, r in rows.items() for k, v in r.items()}
    low = {(p, k): min(v) for p, r in rows.items() for k, v in r.items()}
    ratio = med["studio", "wall"] / med["direct", "wall"]
    ratio_min = low["studio", "wall"] / low["direct", "wall"]
    cpu_ratio = med["studio", "cpu"] / med["direct", "cpu"]
    overhead_ms = (med["studio", "wall"] - med["direct", "wall"]) * 1000
    cpu_overhead_ms = (med["studio", "cpu"] - med["direct", "cpu"]) * 1000

    print(f"{args.model}  {width}x{height}  steps={args.steps}  cfg={cfg}  shift={shift}  "
          f"device={settings.torch_device()}  warmup={args.warmup}  repeats={args.repeats}  (both off the main thread)")
    print(f"{'path':<10}{'wall median ms':>16}{'wall min ms':>13}{'CPU median ms':>15}{'CPU min ms':>12}")
    for path in rows:
        print(f"{path:<10}{med[path, 'wall'] * 1000:>16.1f}{low[path, 'wall'] * 1000:>13.1f}"
              f"{med[path, 'cpu'] * 1000:>15.1f}{low[path, 'cpu'] * 1000:>12.1f}")
    print(f"studio/direct: wall x{ratio:.3f} median, x{ratio_min:.3f} min; CPU x{cpu_ratio:.3f} median")
    preview_ratio = med["previews", "wall"] / med["direct", "wall"] if "previews" in rows else None
    if preview_ratio is not None:
        print(f"with live previews every {settings.preview_every} steps (the studio's default): "
              f"x{preview_ratio:.3f} wall median")
    print(f"overhead per job: {overhead_ms:+.1f} ms wall, {cpu_overhead_ms:+.1f} ms CPU (medians)")
    print(f"pixels identical: {'yes' if match else 'NO'}")
    print("RESULT " + json.dumps({
        "bench": "image_overhead", "model": args.model, "width": width, "height": height, "steps": args.steps,
        "repeats": args.repeats, "warmup": args.warmup, "device": settings.torch_device(),
        "direct_median_s": med["direct", "wall"], "direct_min_s": low["direct", "wall"],
        "studio_median_s": med["studio", "wall"], "studio_min_s": low["studio", "wall"],
        "direct_cpu_median_s": med["direct", "cpu"], "studio_cpu_median_s": med["studio", "cpu"],
        "ratio": ratio, "ratio_min": ratio_min, "cpu_ratio": cpu_ratio, "overhead_ms": overhead_ms,
        "cpu_overhead_ms": cpu_overhead_ms, "pixels_match": bool(match),
        "measures": [
            measure("studio job vs direct call, wall (median)", ratio, "x", "<= 1.03", ratio <= 1.03),
            measure("studio job vs direct call, wall (min)", ratio_min, "x"),
            measure("studio job vs direct call, CPU (median)", cpu_ratio, "x"),
            measure("overhead per job, wall", overhead_ms, "ms"),
            measure("overhead per job, CPU", cpu_overhead_ms, "ms"),
            *([measure(f"studio job with live previews every {settings.preview_every} steps vs direct, wall",
                       preview_ratio, "x")] if preview_ratio is not None else []),
            measure("pixels identical", float(match), "bool", "== 1", bool(match)),
        ],
    }))
    return 0 if match else 1


if __name__ == "__main__":
    sys.exit(main())
