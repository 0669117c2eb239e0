"""A real `studio serve` process, stopped and started the ways a service manager and bad luck do it:
SIGTERM (systemd, docker stop) closes it like Ctrl-C within a bounded time, leaving no job
`running`; a server that cannot start has claimed no job (issue 17, items 4 and 8)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from studio.history import JobStatus
from studio.services import Studio
from studio.settings import Settings

from helpers import free_port, image_params


def serve(home: Path, cache: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen([sys.executable, "-m", "studio.cli", "serve", "--home", str(home), "--model-cache",
                             str(cache), "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_until_up(process: subprocess.Popen, url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not come up")


def job_status(db: Path, job_id: str) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def test_sigterm_stops_the_server_in_bounded_time_and_leaves_no_job_running(tmp_path, model_cache):
    from gradio_client import Client

    home, port = tmp_path / "home", free_port()
    process = serve(home, model_cache, port)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(process, url)
        client = Client(url, verbose=False)
        # Long enough to outlast the stop's grace period: 1000 RK4 steps.
        job = client.predict("image", image_params(steps=1000, solver="rk4", seed=3), api_name="/submit_job")
        deadline = time.monotonic() + 120
        while client.predict(job["id"], api_name="/job_status")["step"] in (None, 0):
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.3)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        took = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
    output = process.stdout.read()
    assert took < 30, f"SIGTERM took {took:.1f} s"
    assert process.returncode == 0, output
    db = home / "studio.db"
    assert job_status(db, job["id"]) == JobStatus.INTERRUPTED.value  # not left `running`
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_server_that_cannot_start_claims_no_job(tmp_path, model_cache):
    home = tmp_path / "home"
    settings = Settings.load(env={}, home=home, model_cache=model_cache)
    waiting = Studio(settings)  # not started: the job is only recorded, as a previous run left it
    job = waiting.jobs.submit("image", image_params())
    waiting.close()
    assert job.error is None
    with socket.socket() as taken:  # someone else has the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = serve(home, model_cache, taken.getsockname()[1])
        try:
            process.wait(timeout=180)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode != 0
    assert job_status(home / "studio.db", job.id) == JobStatus.PENDING.value  # still waiting, not `running`
    with Studio(settings) as later:  # and the next start that comes up runs it
        deadline = time.monotonic() + 120
        while later.history.get_job(job.id).status is not JobStatus.DONE:
            assert time.monotonic() < deadline, later.history.get_job(job.id)
            time.sleep(0.2)

