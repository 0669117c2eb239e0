"""Soak a real `studio serve` for a bounded time with good and bad requests from several clients,
then check what a user would: every accepted job ended, rows match files, the database is sound,
the server's memory stayed bounded. Prints the figures; exits non-zero when a check fails.

    .venv/bin/python bench/soak.py --seconds 60 --clients 4

Only loopback is used: the server listens on 127.0.0.1 and every request goes there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from studio.media import studio_named_files  # noqa: E402

GOOD = {"model": "tiny-lumina-next", "prompt": "a kite over the sea", "steps": 2, "width": 64, "height": 64}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_requests(bomb: Path) -> list[tuple[str, dict]]:
    """(what, submit_job params) that must each be refused and recorded readably."""
    return [
        ("huge seed", {**GOOD, "seed": 2**70}),
        ("unknown keys", {**GOOD, **{f"k{i}": i for i in range(2000)}}),
        ("wrong type", {**GOOD, "prompt": ["a", "b"]}),
        ("foreign option", {**GOOD, "temperature": 0.5}),
        ("bad size", {**GOOD, "width": 65}),
        ("unknown model", {**GOOD, "model": "no-such-model"}),
        ("a path as the start image", {"model": "tiny-wan-i2v", "prompt": "waves", "image": str(bomb)}),
        ("listed-only model", {**GOOD, "model": "infinity-2b"}),
    ]


class Soak:
    def __init__(self, url: str, bomb: Path, seconds: float, clients: int) -> None:
        self.url, self.bomb, self.seconds, self.clients = url, bomb, seconds, clients
        self.accepted: list[str] = []
        self.refused: list[str] = []
        self.injected: dict[str, int] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def call(self, http: httpx.Client, name: str, data: list) -> object:
        event = http.post(f"{self.url}gradio_api/call/{name}", json={"data": data}).json()["event_id"]
        stream = http.get(f"{self.url}gradio_api/call/{name}/{event}").text
        for line in stream.splitlines():
            if line.startswith("data:"):
                return json.loads(line[5:])
        raise RuntimeError(stream[:200])

    def count(self, what: str) -> None:
        with self.lock:
            self.injected[what] = self.injected.get(what, 0) + 1

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        bad = bad_requests(self.bomb)
        deadline = time.monotonic() + self.seconds
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < deadline:
                roll = rng.random()
                try:
                    if roll < 0.4:
                        job = self.call(http, "submit_job", ["image", {**GOOD, "seed": rng.randrange(2**31)}])[0]
                        with self.lock:
                            (self.accepted if job["error"] is None else self.refused).append(job["id"])
                    elif roll < 0.7:
                        what, params = rng.choice(bad)
                        self.count(what)
                        job = self.call(http, "submit_job", ["image" if "image" not in params else "video", params])
                        if isinstance(job, list) and job and isinstance(job[0], dict) and job[0].get("id"):
                            self.call(http, "job_status", [job[0]["id"]])  # its row must read back
                    elif roll < 0.8:
                        self.count("oversized body")
                        big = json.dumps({"data": ["image", {**GOOD, "prompt": "x" * 2_000_000}]})
                        answer = http.post(f"{self.url}gradio_api/call/submit_job", content=big,
                                           headers={"content-type": "application/json"})
                        assert answer.status_code == 413, answer.status_code
                    elif roll < 0.85:
                        self.count("decompression bomb upload")
                        with open(self.bomb, "rb") as f:
                            http.post(f"{self.url}gradio_api/upload", files={"files": ("bomb.png", f, "image/png")})
                    else:
                        self.call(http, "list_history", ["", "", "", 1])
                        self.call(http, "queue_status", [])
                except Exception as err:  # noqa: BLE001 - every surprise is reported
                    with self.lock:
                        self.errors.append(f"{type(err).__name__}: {str(err)[:160]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--model-cache", help="a model cache with the built-in tiny models (default: a new one)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="studio-soak-"))
    cache = Path(args.model_cache) if args.model_cache else home / "cache"
    bomb = home / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb, optimize=True)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", "--home", str(home / "home"),
                               "--model-cache", str(cache), "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    peak = 0
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.5)
        soak = Soak(url, bomb, args.seconds, args.clients)
        threads = [threading.Thread(target=soak.client, args=(n,)) for n in range(args.clients)]
        for thread in threads:
            thread.start()
        process = psutil.Process(server.pid)
        while any(t.is_alive() for t in threads):
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.5)
        # Every accepted job must end.
        db = home / "home" / "studio.db"
        deadline = time.monotonic() + 600
        while True:
            with sqlite3.connect(db) as connection:
                open_jobs = connection.execute("SELECT COUNT(*) FROM jobs WHERE status IN ('pending', 'running')"
                                               ).fetchone()[0]
            peak = max(peak, process.memory_info().rss)
            if open_jobs == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
    with sqlite3.connect(db) as connection:
        statuses = dict(connection.execute("SELECT id, status FROM jobs").fetchall())
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        assets = {row[0] for row in connection.execute("SELECT path FROM assets")}
    outputs = home / "home" / "outputs"
    files = set(studio_named_files(outputs))
    lost = [job_id for job_id in soak.accepted if statuses.get(job_id) not in ("done", "failed", "cancelled")]
    done = sum(1 for job_id in soak.accepted if statuses.get(job_id) == "done")
    checks = {
        "every accepted job ended": not lost,
        "rows = files": assets == files,
        "PRAGMA integrity_check ok": integrity == "ok",
        "peak RSS under 4 GB": peak < 4 * 2**30,
        "no unexpected client error": not soak.errors,
    }
    print(f"soak: {args.clients} clients for {args.seconds:g} s against a real `studio serve`")
    print(f"  jobs accepted {len(soak.accepted)} (done {done}), lost {len(lost)}, rows {len(statuses)}")
    print(f"  bad requests injected {sum(soak.injected.values())}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(soak.injected.items())))
    print(f"  files {len(files)}, asset rows {len(assets)}, integrity {integrity}, server peak RSS "
          f"{peak / 2**20:.0f} MB, client errors {len(soak.errors)}")
    for error in soak.errors[:5]:
        print(f"    {error}")
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
