"""Serving safely: a share link or a non-loopback address never runs without a login, only the
outputs folder is served, uploads are capped, and the API queues, follows and cancels jobs — from
many clients at once — through `gradio_client`, on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AuthenticationError

from studio.history import JobStatus
from studio.ui.app import build_app
from studio.ui.launch import is_loopback, launch_options, read_auth_file, resolve_auth

from helpers import free_port, image_params

STUDIO = Path(sys.executable).with_name("studio")


def launch(studio, **options):
    demo = build_app(studio)
    settings = studio.settings.replace(port=free_port(), **options.pop("settings", {}))
    kwargs = launch_options(settings, options.pop("auth", None))
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **kwargs)
    return demo


@pytest.fixture
def served(studio):
    demo = launch(studio)
    try:
        yield demo, Client(demo.local_url, verbose=False)
    finally:
        demo.close()


# -- who may log in --------------------------------------------------------------------------------


def test_only_a_loopback_launch_without_a_share_link_may_run_open(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert resolve_auth("127.0.0.1", None) == (None, False)
    for host, share in (("0.0.0.0", False), ("192.168.1.5", False), ("127.0.0.1", True)):
        [(user, password)], generated = resolve_auth(host, None, share=share)
        assert generated and user == "studio" and len(password) >= 12
    users = tmp_path / "users.txt"
    users.write_text("# friends\nann:s3cret:with:colons\n\nbob:pw\n")
    assert read_auth_file(users) == [("ann", "s3cret:with:colons"), ("bob", "pw")]
    assert resolve_auth("0.0.0.0", "me:pw", users, share=True) == ([("me", "pw"), *read_auth_file(users)], False)
    users.write_text("no colon here\n")
    with pytest.raises(Exception, match="USER:PASSWORD"):
        read_auth_file(users)


@pytest.mark.parametrize("flags", [["--host", "0.0.0.0"], ["--share"]], ids=["listen", "share"])
def test_serve_beyond_loopback_prints_a_password_and_refuses_strangers(tmp_path, model_cache, flags):
    """The real `studio serve` (the share link itself cannot be made offline; the server still runs)."""
    port = free_port()
    command = [str(STUDIO)] if STUDIO.exists() else [sys.executable, "-m", "studio.cli"]
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home"), "STUDIO_MODEL_CACHE": str(model_cache),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command + ["serve", "--port", str(port), *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"log in as (\S+) / (\S+)", line)
        assert match, line
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                anonymous = httpx.get(f"{url}/config", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the studio did not start"
                time.sleep(0.5)
        assert anonymous.status_code == 401
        assert httpx.get(f"{url}/gradio_api/info", timeout=5).status_code == 401
        client = Client(url, auth=match.groups(), verbose=False)
        assert client.predict(api_name="/queue_status")["paused"] is False
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_loopback_server_with_a_login_rejects_requests_without_it(studio):
    demo = launch(studio, auth=[("ann", "pw")])
    try:
        assert httpx.get(f"{demo.local_url}config", timeout=5).status_code == 401
        with pytest.raises(AuthenticationError):
            Client(demo.local_url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(demo.local_url, auth=("ann", "wrong"), verbose=False)
        assert Client(demo.local_url, auth=("ann", "pw"), verbose=False).predict(api_name="/queue_status")
    finally:
        demo.close()


# -- what is served --------------------------------------------------------------------------------


def test_only_files_under_the_outputs_folder_are_served(served, studio):
    demo, _ = served
    job = studio.run("image", image_params())
    base = f"{demo.local_url}gradio_api/file="
    assert httpx.get(base + str(job.outputs[0].path), timeout=10).status_code == 200
    outputs = studio.settings.outputs_dir
    for attempt in ("/etc/passwd", str(studio.settings.db_path), f"{outputs}/../studio.db",
                    f"{outputs}/%2e%2e/studio.db", f"{outputs}/..%2fstudio.db", "../../../../etc/passwd",
                    str(Path(__file__).resolve())):
        response = httpx.get(base + attempt, timeout=10)
        assert response.status_code in (403, 404), (attempt, response.status_code)
        assert b"root:" not in response.content and b"SQLite" not in response.content


def test_a_server_path_sent_through_the_api_is_not_read(served, studio):
    _, client = served
    with pytest.raises(Exception, match="generate_video"):
        client.predict("video", {"model": "tiny-wan-i2v", "prompt": "waves", "image": "/etc/passwd"},
                       api_name="/submit_job")
    # A start image given as a path on the server instead of an upload, sent over plain HTTP (the Python
    # client would upload its own machine's file instead): Gradio refuses to read it.
    api = client.view_api(return_format="dict", print_info=False)
    names = [p["parameter_name"] for p in api["named_endpoints"]["/generate_video"]["parameters"]]
    sent = {"prompt": "waves", "model": "tiny-wan-i2v", "steps": 1,
            "image": {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}}
    url = f"{served[0].local_url}gradio_api/call/generate_video"
    event = httpx.post(url, json={"data": [sent.get(name) for name in names]}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{url}/{event}", timeout=120).text
    assert "event: error" in stream and "root:" not in stream
    assert all(record.task != "video" or record.status is JobStatus.FAILED for record in studio.history.list_jobs())


def test_uploads_over_the_cap_are_refused(studio):
    demo = launch(studio, settings={"max_upload_mb": 1})
    try:
        big = {"files": ("big.png", b"\0" * (2 * 1024 * 1024), "image/png")}
        assert httpx.post(f"{demo.local_url}gradio_api/upload", files=big, timeout=30).status_code == 413
        small = {"files": ("small.png", b"\0" * 1024, "image/png")}
        assert httpx.post(f"{demo.local_url}gradio_api/upload", files=small, timeout=30).status_code == 200
    finally:
        demo.close()


# -- the API ---------------------------------------------------------------------------------------


def test_queue_follow_list_and_cancel_jobs_through_the_api(served, studio):
    _, client = served
    assert client.predict(api_name="/pause_queue") is True
    first = client.predict("image", image_params(prompt="a kite over the sea"), api_name="/submit_job")
    second = client.predict("image", image_params(prompt="a second kite"), api_name="/submit_job")
    bad = client.predict("image", image_params(width=-3), api_name="/submit_job")
    assert first["status"] == "pending" and bad["status"] == "failed" and "width" in bad["error"]
    queue = client.predict(api_name="/queue_status")
    assert queue["paused"] and [j["id"] for j in queue["jobs"]] == [first["id"], second["id"]]
    assert client.predict(second["id"], api_name="/job_status")["queue_ahead"] == 1
    assert client.predict(second["id"], api_name="/cancel_job") is True

    assert client.predict(api_name="/resume_queue") is False
    deadline = time.monotonic() + 120
    while (status := client.predict(first["id"], api_name="/job_status"))["status"] != "done":
        assert time.monotonic() < deadline and status["status"] in ("pending", "running")
        time.sleep(0.2)
    assert status["seed"] == 1234 and len(status["files"]) == 1
    assert (studio.settings.outputs_dir / status["files"][0]["relpath"]).is_file()  # relative to the outputs
    assert client.predict(second["id"], api_name="/job_status")["status"] == "cancelled"
    found = client.predict("kite over", "", "", 1, api_name="/list_history")
    assert found["total"] == 1 and found["jobs"][0]["id"] == first["id"]
    with pytest.raises(Exception, match="status must be"):
        client.predict("", "", "finished", 1, api_name="/list_history")


@pytest.mark.timeout(900)
def test_fifty_jobs_from_five_clients_are_all_accounted_for(served, studio):
    """5 threads, each with its own gradio_client, 10 generate calls each, at once (64x64, 1 step: short)."""
    demo, _ = served
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def client_thread(n: int) -> None:
        try:
            client = Client(demo.local_url, verbose=False)
            for i in range(10):
                gallery, status = client.predict(prompt=f"client {n} picture {i}", model="tiny-lumina-next",
                                                 width=64, height=64, steps=2, seed=n * 100 + i,
                                                 api_name="/generate_image")
                results.append((f"client {n} picture {i}", status))
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=client_thread, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(800)
    assert not errors, errors
    assert len(results) == 50 and all("Done" in status for _, status in results)
    records = studio.history.find_jobs(limit=100).jobs
    assert len(records) == 50 and {r.prompt for r in records} == {prompt for prompt, _ in results}
    for record in records:
        job_id = re.search(r"job `(\w+)`", dict(results)[record.prompt]).group(1)
        assert record.id == job_id and record.status is JobStatus.DONE  # each client got its own job back
        assert [a.kind for a in record.assets] == ["image", "thumbnail"]
        assert all((studio.settings.outputs_dir / a.path).is_file() for a in record.assets)
    starts = sorted(r.started_at for r in records)
    ends = sorted(r.finished_at for r in records)
    # One worker: one job samples at a time. The saver writes a job's files while the next one samples,
    # with one more waiting for it (studio/job_saver.py), so at most three rows are running at once.
    assert all(ends[i] <= starts[i + 3] for i in range(47))


def test_nothing_a_client_sends_makes_the_history_unreadable(served, studio):
    """Refused requests are recorded for the user to read, and must stay readable by every client:
    numbers past 64 bits, huge names, a flood of unknown keys (issue 17, items 1 and 6)."""
    _, client = served
    sent = [{"model": "tiny-lumina-next", "prompt": "x", "seed": 2**64},
            {"model": "tiny-lumina-next", "prompt": "x", "seed": -(2**70), "steps": 2**70},
            {"model": "tiny-lumina-next", "prompt": "y" * 50_000, "cfg": [[[[[[1]]]]]]},
            {f"k{i}": 1 for i in range(20_000)}]
    ids = [client.predict("image", params, api_name="/submit_job")["id"] for params in sent]
    ids.append(client.predict("t" * 100_000, {"model": "m"}, api_name="/submit_job")["id"])
    for job_id in ids:
        status = client.predict(job_id, api_name="/job_status")
        assert status["status"] == "failed" and len(status["error"]) <= 2000
        assert len(str(status["params"])) < 50_000
    assert "and 19990 more" in client.predict(ids[3], api_name="/job_status")["error"]
    listed = client.predict("", "", "failed", 1, api_name="/list_history")
    assert listed["total"] == len(ids)
    assert client.predict("x", "", "", 1, api_name="/list_history")["total"] >= 1
    assert client.predict(api_name="/queue_status")["paused"] is False  # and the studio goes on


def test_wrong_passwords_slow_down_per_address_and_are_logged(tmp_path, model_cache):
    """A real `studio serve` with a login: guessing passwords as fast as possible gets a few tries,
    then waits that double; the right password then works once the wait is over (issue 17, item 9)."""
    port = free_port()
    command = [str(STUDIO)] if STUDIO.exists() else [sys.executable, "-m", "studio.cli"]
    env = {**os.environ, "STUDIO_HOME": str(tmp_path / "home"), "STUDIO_MODEL_CACHE": str(model_cache),
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command + ["serve", "--port", str(port), "--auth", "ann:right"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/config", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the studio did not start"
                time.sleep(0.5)
        # One connection, as a guessing script would keep: thirty guesses in a fraction of the first
        # one-second wait (a new connection per guess costs ~40 ms here, which used up that second).
        with httpx.Client(base_url=url, timeout=10) as client:
            started = time.monotonic()
            answers = [client.post("/login", data={"username": "ann", "password": f"guess{i}"}) for i in range(30)]
            took = time.monotonic() - started
            tried = [a for a in answers if a.status_code == 400]
            refused = [a for a in answers if a.status_code == 429]
            assert len(tried) <= 4 and len(tried) + len(refused) == 30, [a.status_code for a in answers]
            assert "try again in" in refused[-1].json()["detail"]
            wait = int(refused[-1].headers["retry-after"])
            assert client.post("/login", data={"username": "ann", "password": "right"}).status_code == 429
            time.sleep(wait + 0.2)
            assert client.post("/login", data={"username": "ann", "password": "right"}).status_code == 200
        assert took < 30
    finally:
        proc.terminate()
        output = proc.communicate(timeout=60)[0]
    assert "failed login from 127.0.0.1" in output


def test_an_oversized_call_is_refused_before_it_is_read(served, studio):
    """A job's parameters are a few KB: a 3 MB call body is refused unread, with or without a length
    (issue 17, item 6); uploads keep their own cap and normal calls go through."""
    demo, client = served
    url = f"{demo.local_url}gradio_api/call/submit_job"
    huge = json.dumps({"data": ["image", {"model": "tiny-lumina-next", "prompt": "x" * 3_000_000}]}).encode()
    answer = httpx.post(url, content=huge, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413 and "larger than" in answer.json()["detail"]

    def chunks():
        for start in range(0, len(huge), 65536):
            yield huge[start:start + 65536]

    answer = httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 413
    assert studio.history.list_jobs() == []
    assert client.predict("image", {"model": "tiny-lumina-next", "prompt": "a kite", "steps": 2},
                          api_name="/submit_job")["error"] is None
