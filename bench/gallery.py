"""Gallery queries at 100,000 jobs: a page, filtered pages, full-text searches, a count, a delete.

Fills a fresh history database (in a temporary dir, through the real migrations) with `--jobs`
synthetic jobs spread over a year, six tasks, a dozen models, every status, 2% favorites, each with
an output and a thumbnail asset, and prompts drawn from a small vocabulary plus a few rare words.
Rows are bulk-inserted with SQL (the store's create_job would take minutes for 100k rows; what is
timed is the store's reads, which is what the Gallery tab calls). Each query is run `--repeats`
times through `HistoryStore.find_jobs` (page of 48 + its assets + the total count); the median and
the worst are printed in milliseconds.

    python bench/gallery.py                  # 100,000 jobs
    python bench/gallery.py --jobs 20000 --repeats 5
"""

from __future__ import annotations

import argparse
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


def fill(store: HistoryStore, count: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    start = utcnow() - timedelta(days=365)
    statuses = [JobStatus.DONE] * 90 + [JobStatus.FAILED] * 7 + [JobStatus.CANCELLED] * 3
    jobs, fts, assets = [], [], []
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
        fts.append({"id": job_id, "prompt": prompt})
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
        conn.execute(text("INSERT INTO jobs_fts (job_id, prompt) VALUES (:id, :prompt)"), fts)
        conn.execute(text(
            "INSERT INTO assets (job_id, \"index\", kind, path, mime, width, height, bytes, sha256, created_at) "
            "VALUES (:job, :index, :kind, :path, :mime, 1024, 1024, 1000, '', :created)"), assets)
        conn.execute(text("ANALYZE"))


def timed(repeats: int, action) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

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
        print(f"{'query (48 per page, with assets and total)':46} {'median ms':>10} {'worst ms':>9} {'matches':>8}")
        for label, filters, offset in cases:
            median, worst, page = timed(args.repeats, lambda f=filters, o=offset: store.find_jobs(f, offset=o))
            print(f"{label:46} {median:10.1f} {worst:9.1f} {page.total:8,}")
        victims = [j.id for j in store.find_jobs(JobFilter(), limit=args.repeats, offset=1000).jobs]
        median, worst, _ = timed(len(victims), lambda: store.delete_job(victims.pop()))
        print(f"{'delete one job (row, assets, FTS entry)':46} {median:10.1f} {worst:9.1f}")
        store.close()


if __name__ == "__main__":
    main()
