"""Per-job overhead of the studio's image path over a direct diffusers pipeline call.

Both paths run in one process on the same built-in tiny model (same weights from the same cache),
with the same prompt, seed, size, steps, CFG and scheduler shift, so they do identical math:

- direct: `load_pipeline(card, settings)` then the call `ImageTask.run` makes: `pipe(...)`, or for
  Lumina-Next its own sampler (`engines.lumina_next.sample`, with the card's solver, shift, RoPE and
  CFG settings), since diffusers' pipeline only has Euler (the raw floor);
- studio: `Studio.run("image", params)` end to end: validation, queue, worker thread, memory
  scheduler (model resident after warmup), pipeline, PNG write with metadata, history rows.

The two paths alternate each repeat and warmup runs are excluded. The median and min of each path,
the ratio of the medians and the absolute overhead per job are printed, then one `RESULT {json}`
line. The two images must be pixel-identical, else the script exits non-zero.

    python bench/image_overhead.py                        # tiny-lumina-next, 20 steps, 256x256
    python bench/image_overhead.py --model tiny-lumina2 --steps 4 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
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


def timed(paths: dict[str, Callable[[], Any]], warmup: int,
          repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per call of each path, alternating them each repeat so machine drift hits both alike.

    `warmup` untimed calls of each come first; the last result of each is returned too.
    """
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in paths.items():
            results[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, fn in paths.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, results


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
                names = [o.name for o in FAMILIES.of(card).options]
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

        def via_studio():
            job = studio.run("image", params)
            if job.error or not job.outputs:
                raise SystemExit(f"studio job failed: {job.error}")
            return job

        times, results = timed({"direct": direct, "studio": via_studio}, args.warmup, args.repeats)
        (direct_times, direct_image), (studio_times, job) = ((times[k], results[k]) for k in ("direct", "studio"))

        with Image.open(job.outputs[0].path) as png:
            studio_pixels = np.asarray(png.convert("RGB"))
        match = np.array_equal(np.asarray(direct_image.convert("RGB")), studio_pixels)
    finally:
        studio.close()
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    d_med, d_min = statistics.median(direct_times), min(direct_times)
    s_med, s_min = statistics.median(studio_times), min(studio_times)
    ratio, overhead_ms = s_med / d_med, (s_med - d_med) * 1000

    print(f"{args.model}  {width}x{height}  steps={args.steps}  cfg={cfg}  shift={shift}  "
          f"device={settings.torch_device()}  warmup={args.warmup}  repeats={args.repeats}")
    print(f"{'path':<8}{'median ms':>12}{'min ms':>12}")
    print(f"{'direct':<8}{d_med * 1000:>12.1f}{d_min * 1000:>12.1f}")
    print(f"{'studio':<8}{s_med * 1000:>12.1f}{s_min * 1000:>12.1f}")
    print(f"overhead: x{ratio:.3f} (median), {overhead_ms:+.1f} ms per job")
    print(f"pixels identical: {'yes' if match else 'NO'}")
    print("RESULT " + json.dumps({
        "bench": "image_overhead", "model": args.model, "width": width, "height": height, "steps": args.steps,
        "repeats": args.repeats, "warmup": args.warmup, "device": settings.torch_device(),
        "direct_median_s": d_med, "direct_min_s": d_min, "studio_median_s": s_med, "studio_min_s": s_min,
        "ratio": ratio, "overhead_ms": overhead_ms, "pixels_match": bool(match),
    }))
    return 0 if match else 1


if __name__ == "__main__":
    sys.exit(main())
