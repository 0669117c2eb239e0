"""What live previews cost while sampling: seconds per step with previews on and off, and one preview.

On a built-in tiny model (random weights, the real pipeline classes), the family's own run hook (what
the worker calls) runs the same job with previews every N steps and with previews off, alternating
each repeat; seconds per step are timed between the first and the last step callback, so loading,
text encoding and decoding are left out. Then the cost of one preview on that job's latents (the
projection already made) and of fitting a projection from the VAE once (what a VAE without
published factors pays at its first preview). The two outputs must be pixel-identical, else the
script exits non-zero. One `RESULT {json}` line at the end.

    python bench/preview_overhead.py                       # tiny-lumina-next, 20 steps, 256x256, every 2
    python bench/preview_overhead.py --model tiny-lumina2 --every 4 --repeats 5
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from studio.runtime import preview  # noqa: E402
from studio.runtime.loader import load_pipeline  # noqa: E402
from studio.settings import Settings  # noqa: E402
from studio.tasks.base import run_family  # noqa: E402
from studio.tasks.image import ImageSpec  # noqa: E402
from studio.zoo.cards import CardRegistry  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SEED = 1234


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-lumina-next",
                    choices=["tiny-lumina-next", "tiny-lumina2", "tiny-lumina-t2i"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", default="256x256", help="WIDTHxHEIGHT")
    ap.add_argument("--every", type=int, default=Settings.preview_every, help="a preview every N steps")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--home", type=Path, default=None, help="studio home (default: a fresh temporary dir)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.every < 1 or args.repeats < 1:
        ap.error("--every and --repeats must be >= 1")

    home = args.home or Path(tempfile.mkdtemp(prefix="studio-bench-"))
    try:
        settings = Settings.load(home=home, model_cache=home / "cache")
        settings.ensure_dirs()
        cards = CardRegistry.load([settings.model_zoo_dir])
        card = cards.get(args.model)
        pipe = load_pipeline(card, settings, None, cards)
        spec = ImageSpec.parse({"model": card.id, "prompt": PROMPT, "width": width, "height": height,
                                "steps": args.steps, "seed": SEED}).resolved(card)
        shown: list[preview.Preview] = []
        latents: list[torch.Tensor] = []

        def run(every: int) -> tuple[float, np.ndarray]:
            stamps: list[float] = []
            with preview.previews(every, shown.append, published=not card.tiny):
                output = run_family("image", pipe, spec, card, lambda step, total: stamps.append(time.perf_counter()))
            return (stamps[-1] - stamps[0]) / (len(stamps) - 1), np.asarray(output.items[0].convert("RGB"))

        run(args.every)  # warm-up: also makes a fitted projection once, so the repeats time previews alone
        per_step: dict[str, list[float]] = {"on": [], "off": []}
        pixels: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):
            for name, every in (("on", args.every), ("off", 0)):
                seconds, pixels[name] = run(every)
                per_step[name].append(seconds)
        identical = np.array_equal(pixels["on"], pixels["off"])

        # One preview, on latents of this job's shape (the projection cached, as from the second on).
        channels = preview.latent_channels(pipe.vae)
        z = torch.randn(spec.num_images, channels, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
        previewer = preview.Previewer(1, latents.append, published=not card.tiny)
        costs = []
        for _ in range(30):
            start = time.perf_counter()
            previewer.offer(1, 1, z, pipe.vae)
            costs.append(time.perf_counter() - start)
        start = time.perf_counter()
        projection = preview.fit_projection(pipe.vae)
        fit_s = time.perf_counter() - start
    finally:
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)

    on, off, one = statistics.median(per_step["on"]), statistics.median(per_step["off"]), statistics.median(costs)
    print(f"{args.model}  {width}x{height}  steps={args.steps}  preview every {args.every}  "
          f"device={settings.torch_device()}  repeats={args.repeats}  projection: "
          f"{preview.projection_for(pipe.vae, not card.tiny).source}")
    print(f"{'previews':<10}{'s/step (median)':>18}{'min':>10}")
    print(f"{'off':<10}{off:>18.4f}{min(per_step['off']):>10.4f}")
    print(f"{'on':<10}{on:>18.4f}{min(per_step['on']):>10.4f}")
    print(f"difference: {(on - off) * 1000:+.1f} ms per step ({(on / off - 1) * 100:+.1f}%), "
          f"noise included")
    print(f"one preview: {one * 1000:.2f} ms (median of {len(costs)}), so at most {one / args.every * 1000:.2f} ms "
          f"per step every {args.every}; fitting the projection once: {fit_s:.2f} s ({projection.source})")
    print(f"outputs identical with previews on and off: {'yes' if identical else 'NO'}")
    print("RESULT " + json.dumps({
        "bench": "preview_overhead", "model": args.model, "width": width, "height": height, "steps": args.steps,
        "every": args.every, "s_per_step_on": on, "s_per_step_off": off, "preview_ms": one * 1000,
        "preview_ms_per_step": one / args.every * 1000, "fit_s": fit_s, "identical": identical,
        # For bench/run_all.py: a preview costs at most 5% of a step on average (the difference of the step
        # medians is noise-bound at this size; the one-preview cost is what previews add).
        "measures": [
            {"measure": "preview cost per step (% of a step)", "value": one / args.every / off * 100, "unit": "%",
             "goal": "<= 5", "met": one / args.every / off * 100 <= 5},
            {"measure": "outputs identical, previews on/off", "value": identical, "unit": "", "goal": "yes",
             "met": identical},
        ]}))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
