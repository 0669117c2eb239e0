"""The persistent job queue: order and positions, cancel (waiting or running), pause and resume,
restart recovery after a kill, a locked database, a full disk — and the worker keeps going."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from studio.history import JobStatus
from studio.services import Studio
from studio.settings import Settings

from helpers import FAST_STEPS, files_under, image_params

SLOW_STEPS = 400  # a tiny-model job long enough to catch while it runs (it is cancelled early)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_jobs_wait_in_line_with_their_positions(studio):
    studio.jobs.pause()
    jobs = [studio.jobs.submit("image", image_params(prompt=f"boat {i}")) for i in range(3)]
    assert [studio.jobs.ahead(j.id) for j in jobs] == [0, 1, 2]
    assert [e.job_id for e in studio.jobs.snapshot()] == [j.id for j in jobs]
    time.sleep(1.5)  # paused: nothing starts
    assert all(studio.history.get_job(j.id).status is JobStatus.PENDING for j in jobs)

    studio.jobs.resume()
    for job in jobs:
        assert job.wait(120) and job.status is JobStatus.DONE, job.error
    finished = [studio.history.get_job(j.id) for j in jobs]
    assert [r.started_at for r in finished] == sorted(r.started_at for r in finished)  # first in, first run
    assert studio.jobs.snapshot() == []


def test_cancel_a_waiting_job(studio):
    studio.jobs.pause()
    keep = studio.jobs.submit("image", image_params(prompt="keep"))
    drop = studio.jobs.submit("image", image_params(prompt="drop"))
    assert studio.jobs.cancel(drop.id) and drop.finished and drop.status is JobStatus.CANCELLED
    studio.jobs.resume()
    assert keep.wait(120) and keep.status is JobStatus.DONE
    record = studio.history.get_job(drop.id)
    assert record.status is JobStatus.CANCELLED and record.started_at is None and record.assets == ()
    assert not studio.jobs.cancel(drop.id) and not studio.jobs.cancel(keep.id)  # both finished: nothing to do


def test_cancel_a_running_job_stops_it_between_steps(studio):
    job = studio.jobs.submit("image", image_params(steps=SLOW_STEPS))
    wait_for(lambda: job.step >= 1, what="the first step")
    assert studio.jobs.cancel(job.id)
    assert job.wait(60) and job.status is JobStatus.CANCELLED
    assert job.step < SLOW_STEPS  # it did not run to the end
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.CANCELLED and record.assets == ()
    assert not [p for p in files_under(studio.settings.outputs_dir) if job.id in p.name]
    after = studio.run("image", image_params(), timeout=120)  # the worker carries on
    assert after.status is JobStatus.DONE


def test_a_restart_after_a_kill_interrupts_the_running_job_and_runs_the_waiting_ones(tmp_path, model_cache):
    """A studio process is killed (SIGKILL) mid-job; the next start recovers the queue."""
    home = tmp_path / "home"
    script = textwrap.dedent(f"""
        import sys, time
        from studio.services import Studio
        from studio.settings import Settings
        studio = Studio(Settings.load(env={{}}, home={str(home)!r}, model_cache={str(model_cache)!r})).start()
        params = {{"model": "tiny-lumina-next", "prompt": "a long job", "steps": {SLOW_STEPS}, "seed": 1,
                  "width": 256, "height": 256}}
        running = studio.jobs.submit("image", params)
        waiting = studio.jobs.submit("image", {{**params, "prompt": "next in line", "steps": {FAST_STEPS}}})
        while running.step < 1:
            time.sleep(0.05)
        print(running.id, waiting.id, flush=True)
        time.sleep(600)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        running_id, waiting_id = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    # What a kill in the middle of writing an output leaves: a hidden temporary file.
    partial = home / "outputs" / "image" / f".{running_id}-00.png.k2j_x9.part"
    unrelated = home / "outputs" / "notes.txt.part"  # not ours: left alone
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"half a picture")
    unrelated.write_text("someone else's")

    with Studio(Settings.load(env={}, home=home, model_cache=model_cache)) as studio:
        interrupted = studio.history.get_job(running_id)
        assert interrupted.status is JobStatus.INTERRUPTED and "stopped while this job ran" in interrupted.error
        assert interrupted.params["steps"] == SLOW_STEPS  # the row is intact: it can be re-run as it was
        assert not partial.exists() and unrelated.exists()
        wait_for(lambda: studio.history.get_job(waiting_id).status is JobStatus.DONE, 120, "the waiting job")
        retried = studio.gallery.rerun(running_id)
        assert studio.jobs.cancel(retried.id) and retried.wait(60)  # Retry queues it again (cancelled here)


def test_a_restart_removes_the_files_of_a_save_that_never_got_its_row(tmp_path, model_cache):
    """A kill between writing a job's images and recording them leaves files no row owns: the next
    start removes exactly those — never a recorded output, a file another program put there, or
    anything not named the way the studio names outputs (issue 17, item 7)."""
    import uuid

    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache)
    with Studio(settings) as first:
        kept = first.run("image", image_params())
        assert kept.status is JobStatus.DONE, kept.error
    outputs = settings.outputs_dir
    lost = uuid.uuid4().hex
    orphans = [outputs / "image" / "2026-12-01" / f"{lost}-{n:02d}.png" for n in range(2)]
    orphans.append(outputs / "thumbnails" / "2026-12-01" / f"{lost}.webp")
    strangers = [outputs / "image" / "2026-12-01" / "my-own-picture.png",
                 outputs / "image" / "2026-12-01" / f"{lost}-00.png.txt",
                 outputs / "notes" / f"{lost}-00.png"]
    for path in orphans + strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an image the studio wrote")
    with Studio(settings) as second:
        recorded = [outputs / a.path for a in second.history.get_job(kept.id).assets]  # image and thumbnail
        assert len(recorded) == 2
        assert not any(p.exists() for p in orphans)
        assert all(p.exists() for p in strangers + recorded)


def test_a_locked_database_delays_a_job_but_loses_nothing(studio):
    """Another program holds the write lock longer than SQLite's own wait (5 s): the job still lands."""
    blocker = sqlite3.connect(studio.settings.db_path, timeout=30, check_same_thread=False)
    blocker.isolation_level = None
    studio.jobs.pause()
    job = studio.jobs.submit("image", image_params())
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Timer(7.0, lambda: blocker.execute("COMMIT"))
    released.start()
    try:
        studio.jobs.resume()
        assert job.wait(180) and job.status is JobStatus.DONE, job.error
    finally:
        released.join()
        blocker.close()
    record = studio.history.get_job(job.id)
    assert record.status is JobStatus.DONE and len(record.assets) == 2  # the image and its thumbnail


def test_a_lock_taken_while_the_model_loads_delays_the_job_but_fails_nothing(studio, monkeypatch):
    """The lock is taken while the model loads, so the first write after it is the one that records
    the model as used: that write is retried like every other (issue 17, item 3)."""
    import studio.services as services

    blocker = sqlite3.connect(studio.settings.db_path, timeout=30, check_same_thread=False)
    blocker.isolation_level = None
    timers: list[threading.Timer] = []
    real_load = services.load_pipeline

    def load_while_locked(*args, **kwargs):
        blocker.execute("BEGIN IMMEDIATE")  # another program takes the write lock for 7 s
        timers.append(threading.Timer(7.0, lambda: blocker.execute("COMMIT")))
        timers[-1].start()
        return real_load(*args, **kwargs)

    monkeypatch.setattr(services, "load_pipeline", load_while_locked)
    try:
        job = studio.run("image", image_params(), timeout=180)
        assert job.status is JobStatus.DONE, job.error
    finally:
        for timer in timers:
            timer.join()
        blocker.close()
    assert studio.history.get_job(job.id).status is JobStatus.DONE


@pytest.fixture
def small_disk(tmp_path):
    """An outputs folder on a 96 KiB tmpfs (needs root, as on CI), grown again by the test."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); CI runs this as root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_database_disk_fails_the_running_job_once_space_returns(tmp_path, model_cache, small_disk,
                                                                      monkeypatch):
    """The disk holding the database fills while a job runs: the job fails at once for whoever waits
    on it, its row is recorded failed with the reason as soon as the database can be written again
    (not left `running` for ever), and the worker goes on (issue 17, item 2)."""
    from studio.tasks.image import ImageTask

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    settings = Settings.load(env={}, home=small_disk / "home", model_cache=model_cache,
                             outputs_dir=tmp_path / "outputs")
    filler = small_disk / "filler"
    real_save = ImageTask.save

    def save_then_fill_the_disk(self, *args, **kwargs):
        saved = real_save(self, *args, **kwargs)
        with open(filler, "wb") as f:  # another program takes every byte left
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        return saved

    with Studio(settings) as studio:
        with monkeypatch.context() as patch:
            patch.setattr(ImageTask, "save", save_then_fill_the_disk)
            job = studio.run("image", image_params(), timeout=120)
        assert job.status is JobStatus.FAILED and "disk is full" in job.error, job.error
        filler.unlink()  # space returns
        wait_for(lambda: studio.history.get_job(job.id).status is JobStatus.FAILED, 30, "the row to say failed")
        assert "could not be recorded" in studio.history.get_job(job.id).error
        assert studio.run("image", image_params(), timeout=120).status is JobStatus.DONE  # the worker goes on
        studio.gallery.delete(job.id)  # and the failed job can be deleted like any other


def test_a_full_disk_fails_the_job_cleanly_and_the_next_one_runs(tmp_path, model_cache, small_disk):
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache, outputs_dir=small_disk)
    with Studio(settings) as studio:
        job = studio.run("image", image_params(width=512, height=512, num_images=2), timeout=120)
        assert job.status is JobStatus.FAILED and "disk full" in job.error
        record = studio.history.get_job(job.id)
        assert record.status is JobStatus.FAILED and record.assets == ()
        assert files_under(small_disk) == []  # no partial or orphaned output
        subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
        again = studio.run("image", image_params(width=512, height=512, num_images=2), timeout=120)
        assert again.status is JobStatus.DONE, again.error


def test_a_second_studio_on_the_same_folder_hands_its_jobs_to_the_first(studio, settings):
    """`studio generate` or `studio history rerun` beside a running `studio serve`: one worker, no takeover."""
    studio.jobs.pause()
    waiting = studio.jobs.submit("image", image_params(prompt="the server's own job"))
    with Studio(settings) as beside:
        assert studio.owner and not beside.owner
        # Starting it neither interrupted nor ran the first studio's job.
        assert studio.history.get_job(waiting.id).status is JobStatus.PENDING
        job = beside.jobs.submit("image", image_params(prompt="from a terminal"))
        studio.jobs.resume()
        assert job.wait(120) and job.status is JobStatus.DONE, job.error
        assert [o.kind for o in job.outputs] == ["image"] and job.outputs[0].path.is_file()
        assert waiting.wait(120) and waiting.status is JobStatus.DONE
    assert studio.run("image", image_params(), timeout=120).status is JobStatus.DONE
