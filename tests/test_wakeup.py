"""A job submitted by a second studio process (the CLI beside `studio serve`) starts at once: the
submitter signals the queue's owner with a loopback datagram (studio/wakeup.py) instead of waiting for
the owner's poll. Any datagram only wakes the worker to look at the table; where there are no locks
(Windows) nothing listens and jobs still run."""

from __future__ import annotations

import socket
import time

from studio import owner as owner_module
from studio.history import JobStatus
from studio.owner import QueueOwnership
from studio.services import Studio
from studio.wakeup import WakeListener, signal

from helpers import image_params


def test_a_job_from_a_second_process_starts_without_waiting_for_the_poll(settings):
    first = Studio(settings)
    first.jobs.poll_s = 3600  # the fallback poll would never find the job in this test's time
    with first:
        assert first.run("image", image_params(), timeout=120).status is JobStatus.DONE  # the worker now idles
        assert f"port {QueueOwnership(settings.home).owner_port()}" in (settings.home / "studio.lock").read_text()
        with Studio(settings) as beside:
            assert first.owner and not beside.owner
            job = beside.jobs.submit("image", image_params(prompt="from a terminal"))
            assert job.wait(120) and job.status is JobStatus.DONE, job.error
            assert job.outputs[0].path.is_file()
            assert first.history.get_job(job.id).status is JobStatus.DONE
    assert QueueOwnership(settings.home).owner_port() is None  # closed: no port left to signal


def test_any_small_datagram_only_wakes_and_an_oversize_one_is_ignored():
    wakes: list[float] = []
    listener = WakeListener(lambda: wakes.append(time.monotonic()))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            stranger.sendto(b"x" * 4000, ("127.0.0.1", listener.port))  # not a wake-up: ignored
            stranger.sendto(b"DROP TABLE jobs", ("127.0.0.1", listener.port))  # content means nothing
            _until(lambda: wakes)
            time.sleep(0.3)
            assert len(wakes) == 1  # the small one woke it, the big one did not
            for _ in range(500):  # a flood: the worker looks at the table a few times, not 500
                stranger.sendto(b"wake", ("127.0.0.1", listener.port))
            time.sleep(0.3)
            assert 2 <= len(wakes) <= 100
        signal(listener.port)
        _until(lambda: time.monotonic() - wakes[-1] < 0.3)
    finally:
        listener.close()
    signal(listener.port)  # nobody listens any more: sending is harmless
    signal(None)


def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "no wake-up arrived"
        time.sleep(0.01)


def test_the_lock_file_names_the_owners_port_and_nobody_elses(tmp_path):
    owner, other = QueueOwnership(tmp_path), QueueOwnership(tmp_path)
    assert owner.acquire() and not other.acquire()
    try:
        assert other.owner_port() is None  # the owner has not announced one yet
        owner.announce(43210)
        assert other.owner_port() == 43210
        owner.announce(5)  # shorter text: nothing of the old one is left behind
        assert (tmp_path / "studio.lock").read_text().split() == [(tmp_path / "studio.lock").read_text().split()[0],
                                                                  "port", "5"]
    finally:
        owner.release()


def test_without_locks_nothing_listens_and_jobs_still_run(settings, monkeypatch):
    monkeypatch.setattr(owner_module, "fcntl", None)  # as on Windows
    with Studio(settings) as studio:
        assert studio.owner and studio._wakeup is None
        assert QueueOwnership(settings.home).owner_port() is None
        assert studio.run("image", image_params(), timeout=120).status is JobStatus.DONE
