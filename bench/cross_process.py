"""How soon a job submitted from a second studio process starts, and how soon that process hears it finished.

A queue owner (a Studio with the built-in tiny model, in a subprocess of its own, as `studio serve`
would be) runs the jobs; this process opens the same data folder, is not the owner, and submits N
small jobs one at a time, each after a random pause (so a submit lands anywhere in the owner's
poll interval), waiting for each to finish as `studio generate` does. From the job rows (one clock:
both processes write UTC times): submit -> running is `started_at - created_at`; the follow latency
is when this process's handle said done minus the row's `finished_at`, i.e. beyond the job's own time.

    python bench/cross_process.py                 # 10 jobs of tiny-lumina-next, 2 steps, 128x128
    python bench/cross_process.py --jobs 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.history import JobStatus  # noqa: E402
from studio.services import Studio  # noqa: E402
from studio.settings import Settings  # noqa: E402

OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from studio.services import Studio
    from studio.settings import Settings
    home, params = Path(sys.argv[1]), eval(sys.argv[2])
    with Studio(Settings.load(env={}, home=home, model_cache=home / "cache")) as studio:
        assert studio.owner
        warm = studio.run("image", params, timeout=600)  # builds and loads the tiny model
        assert warm.error is None, warm.error
        print("ready", flush=True)
        sys.stdin.read()  # until the bench closes it
""")


def measure(name: str, value: float, unit: str, goal: str = "", met: bool | None = None) -> dict[str, Any]:
    return {"measure": name, "value": round(value, 2), "unit": unit, "goal": goal, "met": met}


def aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-pause", type=float, default=1.0, help="longest random pause before a submit (s)")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    params = {"model": "tiny-lumina-next", "prompt": "a boat", "steps": args.steps, "width": args.size,
              "height": args.size, "seed": 1}
    home = Path(tempfile.mkdtemp(prefix="studio-bench-xproc-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(home), repr(params)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    starts, follows, totals = [], [], []
    try:
        line = owner.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"the queue owner did not start (exit {owner.wait()})")
        rng = random.Random(0)
        with Studio(Settings.load(env={}, home=home, model_cache=home / "cache")) as studio:
            if studio.owner:
                raise SystemExit("this process took the queue: the owner's lock is not held")
            for _ in range(args.jobs):
                time.sleep(rng.uniform(0, args.max_pause))
                job = studio.jobs.submit("image", params)
                if not job.wait(120) or job.status is not JobStatus.DONE:
                    raise SystemExit(f"job failed: {job.status} {job.error}")
                heard = datetime.now(timezone.utc)
                record = studio.history.get_job(job.id)
                created, started, finished = (aware(t) for t in (record.created_at, record.started_at,
                                                                    record.finished_at))
                starts.append((started - created).total_seconds() * 1000)
                follows.append((heard - finished).total_seconds() * 1000)
                totals.append((heard - created).total_seconds() * 1000)
    finally:
        if owner.stdin:
            owner.stdin.close()
        try:
            owner.wait(120)
        except subprocess.TimeoutExpired:
            owner.kill()
        shutil.rmtree(home, ignore_errors=True)

    start_med, follow_med = statistics.median(starts), statistics.median(follows)
    print(f"tiny-lumina-next {args.size}x{args.size} steps={args.steps}  jobs={args.jobs}  "
          f"(submitted from a second process; pauses 0-{args.max_pause} s)")
    print(f"{'':<28}{'median ms':>11}{'mean ms':>10}{'max ms':>10}")
    for name, values in (("submit -> running", starts), ("done -> heard (follow)", follows),
                         ("submit -> heard done", totals)):
        print(f"{name:<28}{statistics.median(values):>11.1f}{statistics.mean(values):>10.1f}{max(values):>10.1f}")
    print("RESULT " + json.dumps({
        "bench": "cross_process", "jobs": args.jobs, "steps": args.steps, "size": args.size,
        "submit_to_running_ms": starts, "follow_ms": follows,
        "measures": [
            measure("second process: submit -> running (median)", start_med, "ms", "<= 50", start_med <= 50),
            measure("second process: submit -> running (mean)", statistics.mean(starts), "ms"),
            measure("second process: done -> heard done (median)", follow_med, "ms"),
        ],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
