"""Saving off the sampling thread: N consecutive jobs of a tiny model at a large size, saved while
the next one samples.

The jobs are queued at once (paused, then resumed) and run back to back on the built-in
tiny-lumina-next. From the queue's listeners, per job: sampling (running -> handed to the saver),
saving (from when the saver could start on it to its done event: PNG encode, metadata, thumbnail,
fsyncs, rows) and the gap the sampling thread leaves between one job's sampling and the next's.
The figure that matters is how long the sampling thread waited for the saver
(`JobQueue.save_wait_s`, per job; goal <= 10 ms), and the total wall time against the sum of
sampling and saving (what a thread doing both in turn would take).

    python bench/save_overlap.py                     # 4 jobs, 512x512, 2 steps (under a minute)
    python bench/save_overlap.py --size 1024         # the largest size the tiny card takes
    python bench/save_overlap.py --jobs 8 --size 512 --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio.history import JobStatus  # noqa: E402
from studio.job import Stage  # noqa: E402
from studio.services import Studio  # noqa: E402
from studio.settings import Settings  # noqa: E402


def measure(name: str, value: float, unit: str, goal: str = "", met: bool | None = None) -> dict[str, Any]:
    return {"measure": name, "value": round(value, 2), "unit": unit, "goal": goal, "met": met}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--size", type=int, default=512, help="width and height (tiny-lumina-next takes up to 1024)")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()
    if args.jobs < 2:
        ap.error("--jobs must be >= 2 (the overlap is between consecutive jobs)")
    home = Path(tempfile.mkdtemp(prefix="studio-bench-save-"))
    params = {"model": "tiny-lumina-next", "prompt": "a lighthouse", "steps": args.steps, "width": args.size,
              "height": args.size, "seed": 7}
    events: dict[str, dict[str, float]] = {}
    lock = threading.Lock()

    def heard(job) -> None:
        now = time.perf_counter()
        with lock:
            seen = events.setdefault(job.id, {})
            if job.status is JobStatus.RUNNING and job.stage is Stage.LOADING:
                seen.setdefault("running", now)
            if job.stage is Stage.SAVING and job.status is JobStatus.RUNNING:
                seen.setdefault("handed", now)
            if job.finished:
                seen.setdefault("done", now)

    try:
        with Studio(Settings.load(env={}, home=home, model_cache=home / "cache")) as studio:
            warm = studio.run("image", params, timeout=600)  # builds and loads the model, warms the code
            assert warm.status is JobStatus.DONE, warm.error
            waited_before = getattr(studio.jobs, "save_wait_s", None)
            studio.jobs.add_listener(heard)
            studio.jobs.pause()
            jobs = [studio.jobs.submit("image", {**params, "seed": 7 + k}) for k in range(args.jobs)]
            started = time.perf_counter()
            studio.jobs.resume()
            for job in jobs:
                assert job.wait(600) and job.status is JobStatus.DONE, job.error
            wall = time.perf_counter() - started
            waited = (studio.jobs.save_wait_s - waited_before) if waited_before is not None else None
            for job in jobs:  # row and files agree
                record = studio.history.get_job(job.id)
                assert record.status is JobStatus.DONE and all((studio.settings.outputs_dir / a.path).is_file()
                                                               for a in record.assets)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    times = [events[j.id] for j in jobs]
    sampling = [t["handed"] - t["running"] for t in times]
    # The saver starts on a job when it is handed over or when the previous save is done, if later.
    saving = [t["done"] - max(t["handed"], times[k - 1]["done"] if k else 0.0) for k, t in enumerate(times)]
    gaps = [times[k + 1]["running"] - times[k]["handed"] for k in range(len(times) - 1)]
    blocked_ms = waited / len(jobs) * 1000 if waited is not None else statistics.median(gaps) * 1000
    in_turn = sum(sampling) + sum(saving)
    print(f"tiny-lumina-next {args.size}x{args.size} steps={args.steps}  jobs={args.jobs}")
    print(f"{'per job':<44}{'median ms':>11}{'max ms':>10}")
    for name, values in (("sampling (running -> handed to the saver)", sampling), ("saving", saving),
                         ("sampling thread's gap to the next job", gaps)):
        print(f"{name:<44}{statistics.median(values) * 1000:>11.1f}{max(values) * 1000:>10.1f}")
    print(f"sampling thread blocked on saving: {blocked_ms:.1f} ms per job"
          + ("" if waited is not None else " (no saver: the gap, the save included)"))
    print(f"wall {wall:.2f} s for {args.jobs} jobs; sampling + saving in turn would take {in_turn:.2f} s "
          f"(x{wall / in_turn:.3f})")
    print("RESULT " + json.dumps({
        "bench": "save_overlap", "jobs": args.jobs, "size": args.size, "steps": args.steps, "wall_s": wall,
        "sampling_s": sampling, "saving_s": saving, "gaps_s": gaps, "blocked_ms_per_job": blocked_ms,
        "measures": [
            measure("sampling thread blocked on saving, per job", blocked_ms, "ms", "<= 10", blocked_ms <= 10),
            measure("saving per job (median)", statistics.median(saving) * 1000, "ms"),
            measure("wall vs sampling + saving in turn", wall / in_turn, "x", "< 1", wall < in_turn),
        ],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
