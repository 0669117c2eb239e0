"""What caching Lumina-Next's RoPE tables saves (engines/lumina_next.py, `rope_table`).

Without the cache every model call builds the full 384x384 RoPE table on the CPU and the model
copies it to its device, as diffusers' pipeline does; with it, each (size, scale, time branch,
device) table is built once and only the part the image reads is kept on the device. Two figures:

- CPU seconds (and wall seconds) per image of the built-in tiny Lumina-Next (`tiny-lumina-next`,
  random weights), through `engines.lumina_next.sample` with the family's defaults, with the cache
  on and off (alternating, after a warm-up), on one torch thread by default, their ratio, and
  whether the pixels are identical (they must be: exit 1 if not);
- the per-call RoPE cost at the real 2B model's sizes (LuminaNextDiT2DModel of
  Alpha-VLLM/Lumina-Next-SFT-diffusers: hidden 2304, 32 heads, so a head dim of 72; 2x2 patches),
  for a 1024x1024 image: the uncached build on the CPU and the table it copies per call, against a
  cache hit and the part the cache keeps. No model is instantiated.

    python bench/lumina_next_rope.py                 # 320x320 (above the native 256: both tables), 20 steps
    python bench/lumina_next_rope.py --size 256x256 --steps 20 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from studio.engines import lumina_next  # noqa: E402
SHIPPED_CACHE_SIZE = lumina_next.ROPE_CACHE_SIZE  # what the studio runs with; the bench turns it off and on
from studio.families import FAMILIES  # noqa: E402

REAL_HEAD_DIM = 2304 // 32  # Lumina-Next-SFT's transformer config: hidden_size / num_attention_heads
REAL_PATCH = 2
MIB = 2 ** 20


def demo_options(steps: int) -> lumina_next.LuminaNextOptions:
    """The Lumina-Next family's defaults (the authors' demo) as engine options."""
    family = FAMILIES.get("lumina-next")
    fields = {"solver", "shift", "cfg_mode", "rope_scaling", "watershed", "proportional_attn"}
    values = {o.name: o.default for o in family.options if o.name in fields}
    return lumina_next.LuminaNextOptions(steps=steps, cfg=4.0, **values)


def tiny_pipeline(home: Path):
    from studio.runtime.loader import load_pipeline
    from studio.settings import REPO_ROOT, Settings
    from studio.zoo.builtin import ensure_builtin
    from studio.zoo.cards import CardRegistry

    cache = home / "hf-cache"
    ensure_builtin("tiny-lumina-next", cache)
    card = CardRegistry.load([REPO_ROOT / "model_zoo"]).get("tiny-lumina-next")
    return load_pipeline(card, Settings.load(env={}, home=home / "studio", model_cache=cache))


def one_image(pipe, width: int, height: int, opts, cached: bool) -> tuple[float, float, np.ndarray]:
    """(CPU seconds, wall seconds, pixels) of one image."""
    lumina_next.ROPE_CACHE_SIZE = SHIPPED_CACHE_SIZE if cached else 0
    lumina_next.clear_rope_cache()  # every image pays its own misses: what a job at a new size pays
    cpu, start = time.process_time(), time.perf_counter()
    images, _ = lumina_next.sample(pipe, prompt="a lighthouse at dusk, oil on canvas", negative_prompt="",
                                   width=width, height=height, num_images=1,
                                   generator=torch.Generator().manual_seed(1234), opts=opts)
    return time.process_time() - cpu, time.perf_counter() - start, np.asarray(images[0])


def per_call_at_real_size(repeats: int) -> dict[str, float]:
    """The RoPE work one model call of the 2B model does at 1024x1024, uncached and cached (CPU)."""
    grid = (1024 // 8 // REAL_PATCH,) * 2
    scale = 1.0  # 1024 is the native size: the demo keeps the native table; the build costs the same scaled
    lumina_next.ROPE_CACHE_SIZE = 0
    builds = []
    for _ in range(repeats):
        start = time.perf_counter()
        full = lumina_next.rope_table(REAL_HEAD_DIM, lumina_next.ROPE_MAX, grid, scale, 1.0, "cpu")
        builds.append(time.perf_counter() - start)
    lumina_next.ROPE_CACHE_SIZE = SHIPPED_CACHE_SIZE
    lumina_next.clear_rope_cache()
    start = time.perf_counter()
    kept = lumina_next.rope_table(REAL_HEAD_DIM, lumina_next.ROPE_MAX, grid, scale, 1.0, "cpu")
    miss = time.perf_counter() - start
    hits = []
    for _ in range(max(repeats, 20)):
        start = time.perf_counter()
        lumina_next.rope_table(REAL_HEAD_DIM, lumina_next.ROPE_MAX, grid, scale, 1.0, "cpu")
        hits.append(time.perf_counter() - start)
    lumina_next.clear_rope_cache()
    return {"build_ms": statistics.median(builds) * 1e3, "uncached_mib": full.numel() * full.element_size() / MIB,
            "miss_ms": miss * 1e3, "hit_ms": statistics.median(hits) * 1e3,
            "cached_mib": kept.numel() * kept.element_size() / MIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="320x320", help="WIDTHxHEIGHT of the tiny model's image (native 256)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed images per path, after one warm-up each")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: CPU seconds then hardly depend on what else the machine runs)")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    opts = demo_options(args.steps)

    with tempfile.TemporaryDirectory() as home:
        pipe = tiny_pipeline(Path(home))
        times: dict[bool, list[float]] = {True: [], False: []}
        walls: dict[bool, list[float]] = {True: [], False: []}
        pictures: dict[bool, np.ndarray] = {}
        for round_ in range(args.repeats + 1):
            for cached in (True, False):
                cpu, wall, pictures[cached] = one_image(pipe, width, height, opts, cached)
                if round_:  # the first round warms both paths up
                    times[cached].append(cpu)
                    walls[cached].append(wall)
        identical = bool(np.array_equal(pictures[True], pictures[False]))
    real = per_call_at_real_size(args.repeats + 2)
    lumina_next.ROPE_CACHE_SIZE = SHIPPED_CACHE_SIZE

    on, off = statistics.median(times[True]), statistics.median(times[False])
    wall_on, wall_off = statistics.median(walls[True]), statistics.median(walls[False])
    speedup = off / on
    print(f"tiny-lumina-next, {width}x{height}, {args.steps} steps ({opts.solver}, CFG {opts.cfg}), "
          f"median of {args.repeats}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<28}{'CPU s / image':>14}{'wall s':>10}")
    print(f"{'RoPE built every call':<28}{off:>14.3f}{wall_off:>10.3f}")
    print(f"{'RoPE cached':<28}{on:>14.3f}{wall_on:>10.3f}")
    print(f"(fastest image: {min(times[False]):.3f} s every call, {min(times[True]):.3f} s cached)")
    print(f"speedup {speedup:.2f}x in CPU time ({wall_off / wall_on:.2f}x wall); pixels identical: {identical}")
    print()
    print(f"2B model at 1024x1024 (head dim {REAL_HEAD_DIM}), RoPE per model call, CPU:")
    print(f"  uncached: build {real['build_ms']:.1f} ms, a {real['uncached_mib']:.1f} MiB table copied to the device")
    print(f"  cached:   hit {real['hit_ms'] * 1e3:.1f} us (first call {real['miss_ms']:.1f} ms), "
          f"{real['cached_mib']:.2f} MiB kept on the device")
    measures = [
        {"measure": "tiny Lumina-Next CPU s/image, RoPE cached", "value": round(on, 4), "unit": "s", "goal": "",
         "met": None},
        {"measure": "tiny Lumina-Next CPU s/image, RoPE every call", "value": round(off, 4), "unit": "s",
         "goal": "", "met": None},
        {"measure": "RoPE cache speedup, wall (tiny Lumina-Next)", "value": round(wall_off / wall_on, 3),
         "unit": "x", "goal": "", "met": None},
        {"measure": "RoPE cache speedup, CPU (tiny Lumina-Next)", "value": round(speedup, 3), "unit": "x",
         "goal": ">= 1.1", "met": speedup >= 1.1},
        {"measure": "RoPE cache pixels identical", "value": int(identical), "unit": "bool", "goal": "== 1",
         "met": identical},
        {"measure": "2B RoPE build per call, uncached (1024px)", "value": round(real["build_ms"], 2), "unit": "ms",
         "goal": "", "met": None},
        {"measure": "2B RoPE per call, cached (1024px)", "value": round(real["hit_ms"], 4), "unit": "ms",
         "goal": "", "met": None},
        {"measure": "2B RoPE table per call, uncached", "value": round(real["uncached_mib"], 2), "unit": "MiB",
         "goal": "", "met": None},
        {"measure": "2B RoPE table kept, cached", "value": round(real["cached_mib"], 2), "unit": "MiB",
         "goal": "", "met": None},
    ]
    result = {"bench": "lumina_next_rope", "size": f"{width}x{height}", "steps": args.steps,
              "repeats": args.repeats, "cpu_seconds_cached": times[True], "cpu_seconds_uncached": times[False],
              "wall_seconds_cached": walls[True], "wall_seconds_uncached": walls[False], "threads": args.threads,
              "speedup": speedup, "pixels_identical": identical, "real_2b_1024": real, "measures": measures}
    print("RESULT " + json.dumps(result))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
