"""Gallery queries at 100,000 jobs: a page, filtered pages, full-text searches, a count, a delete.

Fills a fresh history database (in a temporary dir, through the real migrations) with `--jobs`
synthetic jobs spread over a year, six tasks, a dozen models, every status, 2% favorites, each with
an output and a thumbnail asset, and prompts drawn from a small vocabulary plus a few rare words.
Rows are bulk-inserted with SQL (the store's create_job would take minutes for 100k rows; what is
timed is the store's reads, which is what the Gallery tab calls). Each query is run `--repeats`
times through `HistoryStore.find_jobs` (page of 48 + its assets + the total count); the median and
the worst are printed in milliseconds, then one `RESULT {json}` line whose "measures" hold each
query's median against its goal (at most 50 ms at 100,000 jobs) and the slowest of them.

    python bench/gallery.py                  # 100,000 jobs, 9 repeats
    python bench/gallery.py --quick          # 100,000 jobs, 5 repeats (bench/run_all.py), ~30 s
    python bench/gallery.py --jobs 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import text

from studio.history import HistoryStore, JobFilter, JobStatus
from studio.history.tables import utcnow

TASKS = ["image", "video", "audio", "music", "compose", "anagram"]
MODELS = [f"model-{i}" for i in range(12)]
WORDS = ("a the red blue green old young cat dog fox bird lighthouse mountain river forest city street night "
         "dawn dusk rain snow fog portrait landscape painting photo watercolor cinematic neon golden quiet "
         "storm ocean desert garden castle robot dragon tea house window light shadow").split()
RARE = ["zeppelin", "marmalade", "猫在睡觉", "quokka"]  # each in about 1 job in 10,000
GOAL_MS = 50  # each gallery query at 100,000 jobs, as the Gallery tab asks it (page, assets and total)
GOAL_JOBS = 100_000


def fill(store: HistoryStore, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = utcnow() - timedelta(days=365)
    statuses = [JobStatus.DONE] * 90 + [JobStatus.FAILED] * 7 + [JobStatus.CANCELLED] * 3
    jobs, assets = [], []
    for i in range(count):
        job_id = uuid.uuid4().hex
        words = rng.choices(WORDS, k=rng.randint(6, 16))
        if rng.random() < 4e-4:
            words.append(rng.choice(RARE))
        prompt = " ".join(words)
        created = start + timedelta(seconds=i * 365 * 86400 / count)
        status = rng.choice(statuses).value
        jobs.append({"id": job_id, "created": created.replace(tzinfo=None), "status": status,
                     "task": rng.choice(TASKS), "model": rng.choice(MODELS), "prompt": prompt,
                     "fav": rng.random() < 0.02})
        if status == "done":
            day = f"{created:%Y-%m-%d}"
            assets.append({"job": job_id, "index": 0, "kind": "image", "path": f"image/{day}/{job_id}-00.png",
                           "mime": "image/png", "created": created.replace(tzinfo=None)})
            assets.append({"job": job_id, "index": 1, "kind": "thumbnail", "path": f"thumbnails/{day}/{job_id}.webp",
                           "mime": "image/webp", "created": created.replace(tzinfo=None)})
    with store.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (id, created_at, started_at, finished_at, status, task, model_id, prompt, "
            "negative_prompt, params, seed, duration_s, favorite) VALUES (:id, :created, :created, :created, "
            ":status, :task, :model, :prompt, '', '{\"steps\": 30}', 1, 1.0, :fav)"), jobs)
        # The jobs were numbered (seq) in creation order as they went in; the index is keyed by that number.
        conn.execute(text("INSERT INTO jobs_fts (rowid, prompt) SELECT seq, prompt FROM jobs"))
        conn.execute(text(
            "INSERT INTO assets (job_id, \"index\", kind, path, mime, width, height, bytes, sha256, created_at) "
            "VALUES (:job, :index, :kind, :path, :mime, 1024, 1024, 1000, '', :created)"), assets)
        conn.execute(text("ANALYZE"))


def timed(repeats: int, action) -> tuple[float, float, float, object]:
    """Median, best and worst milliseconds of `repeats` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), min(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=GOAL_JOBS)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="5 repeats (still 100,000 jobs unless --jobs)")
    args = parser.parse_args()
    repeats = 5 if args.quick else args.repeats

    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(Path(tmp) / "history.db")
        t0 = time.perf_counter()
        fill(store, args.jobs)
        print(f"filled {args.jobs:,} jobs in {time.perf_counter() - t0:.1f} s "
              f"({(Path(tmp) / 'history.db').stat().st_size / 2**20:.0f} MiB database + WAL)")
        a_month_ago = utcnow() - timedelta(days=30)
        cases = [
            ("first page, no filter", JobFilter(), 0),
            ("page 500 (offset 23,952)", JobFilter(), 499 * 48),
            ("task = video", JobFilter(task="video"), 0),
            ("task + model + status", JobFilter(task="image", model_id="model-3", status="done"), 0),
            ("favorites", JobFilter(favorites=True), 0),
            ("last 30 days", JobFilter(since=a_month_ago), 0),
            ("search: common word 'lighthouse'", JobFilter(text="lighthouse"), 0),
            ("search: two words 'red fox'", JobFilter(text="red fox"), 0),
            ("search: rare word 'zeppelin'", JobFilter(text="zeppelin"), 0),
            ("search: CJK '猫在睡'", JobFilter(text="猫在睡"), 0),
            ("search: short word 'a' (LIKE scan)", JobFilter(text="a"), 0),
            ("search + filter: 'storm' in audio", JobFilter(text="storm", task="audio"), 0),
        ]
        print(f"{'query (48 per page, with assets and total)':46} {'median ms':>10} {'best ms':>8} {'worst ms':>9} "
              f"{'matches':>8}")
        medians = {}
        for label, filters, offset in cases:
            median, best, worst, page = timed(repeats, lambda f=filters, o=offset: store.find_jobs(f, offset=o))
            medians[label] = median
            print(f"{label:46} {median:10.1f} {best:8.1f} {worst:9.1f} {page.total:8,}")
        victims = [j.id for j in store.find_jobs(JobFilter(), limit=repeats, offset=1000).jobs]
        delete_ms, best, worst, _ = timed(len(victims), lambda: store.delete_job(victims.pop()))
        print(f"{'delete one job (row, assets, FTS entry)':46} {delete_ms:10.1f} {best:8.1f} {worst:9.1f}")
        store.close()
    slowest = max(medians, key=medians.get)
    print(f"slowest query: {slowest} ({medians[slowest]:.1f} ms median; goal <= {GOAL_MS} ms for each "
          f"at {GOAL_JOBS:,} jobs)")
    goal = GOAL_MS if args.jobs >= GOAL_JOBS else None  # a smaller history says nothing about the goal
    measures = [_measure(f"gallery {label}", ms, goal) for label, ms in medians.items()]
    measures.append(_measure("gallery slowest query", medians[slowest], goal))
    measures.append(_measure("gallery delete one job", delete_ms, None))
    print("RESULT " + json.dumps({"jobs": args.jobs, "repeats": repeats, "median_ms": medians,
                                  "slowest": slowest, "delete_ms": delete_ms, "measures": measures}))


def _measure(name: str, ms: float, goal_ms: float | None) -> dict:
    return {"measure": name, "value": round(ms, 2), "unit": "ms", "goal": "" if goal_ms is None else f"<= {goal_ms}",
            "met": None if goal_ms is None else ms <= goal_ms}


if __name__ == "__main__":
    main()
