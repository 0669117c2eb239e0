"""A worker per device (issue 26), with two CPU stand-ins for two GPUs: each has its own scheduler and
budget, a job goes to the worker that already holds its model, else to the least loaded one, and the
job records which device and worker ran it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from studio.history import JobStatus
from studio.history.tables import Job, Worker, utcnow
from studio.history.workers import WorkerBook
from studio.services import Studio
from studio.settings import Settings

from helpers import image_params

LUMINA = image_params(width=64, height=64, steps=2)
LUMINA2 = image_params(model="tiny-lumina2", width=64, height=64, steps=2)


def _wait(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def two_devices(tmp_path, model_cache):
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache, devices="cpu,cpu",
                             ram_budget_gb=4)
    with Studio(settings) as studio:
        yield studio


def test_each_device_has_its_worker_with_its_own_scheduler_and_budget(two_devices):
    studio = two_devices
    assert studio.devices == ["cpu", "cpu"] and len(studio.jobs.workers) == 2
    assert studio.schedulers[0] is not studio.schedulers[1]
    assert [s.device_budget() for s in studio.schedulers] == [4 * 2**30] * 2
    live = studio.jobs.book.live()
    assert sorted(w.id for w in live) == sorted(w.id for w in studio.jobs.workers)
    assert {w.device for w in live} == {"cpu"}


def test_a_job_goes_to_the_worker_that_holds_its_model_else_to_the_least_loaded(two_devices):
    studio = two_devices
    first = studio.run("image", LUMINA, timeout=120)
    assert first.status is JobStatus.DONE, first.error
    row = studio.history.get_job(first.id)
    holder = next(w for w in studio.jobs.workers if w.id == row.worker)
    other = next(w for w in studio.jobs.workers if w is not holder)
    assert row.device == "cpu" and holder.scheduler.resident() == ["tiny-lumina-next"]
    # Both workers are idle and both look at each job: the one holding the model takes every one of them.
    for seed in range(3):
        job = studio.run("image", {**LUMINA, "seed": seed}, timeout=120)
        assert job.status is JobStatus.DONE and studio.history.get_job(job.id).worker == holder.id
    # Another model goes to the worker with room (nothing loaded), not on top of the first one's.
    job = studio.run("image", LUMINA2, timeout=120)
    assert job.status is JobStatus.DONE, job.error
    assert studio.history.get_job(job.id).worker == other.id
    assert holder.scheduler.resident() == ["tiny-lumina-next"] and other.scheduler.resident() == ["tiny-lumina2"]
    for scheduler in studio.schedulers:  # each within its own budget
        assert scheduler.device_used() <= scheduler.device_budget()


def test_two_devices_run_two_jobs_at_once(two_devices):
    studio = two_devices
    slow = {**LUMINA, "steps": 400}
    a = studio.jobs.submit("image", slow)
    b = studio.jobs.submit("image", {**LUMINA2, "steps": 400})
    _wait(lambda: a.step >= 1 and b.step >= 1, 120, "both jobs sampling")
    assert {a.device, b.device} == {"cpu"} and len(studio.jobs.running_jobs()) == 2
    running = [e for e in studio.jobs.snapshot() if e.status is JobStatus.RUNNING]
    assert sorted(e.job_id for e in running) == sorted([a.id, b.id])
    assert studio.jobs.cancel(a.id) and studio.jobs.cancel(b.id)
    assert a.wait(60) and b.wait(60)
    assert {studio.history.get_job(j.id).status for j in (a, b)} == {JobStatus.CANCELLED}
    assert {studio.history.get_job(j.id).worker for j in (a, b)} == {w.id for w in studio.jobs.workers}


def test_pending_etas_spread_over_the_workers(two_devices):
    studio = two_devices
    for _ in range(2):  # a typical duration for the ETAs
        assert studio.run("image", LUMINA, timeout=120).status is JobStatus.DONE
    typical = studio.jobs._typical("image", "tiny-lumina-next")
    studio.jobs.pause()
    try:
        waiting = [studio.jobs.submit("image", {**LUMINA, "seed": n}) for n in range(4)]
        entries = [e for e in studio.jobs.snapshot() if e.status is JobStatus.PENDING]
        assert [e.position for e in entries] == [1, 2, 3, 4]
        # Two idle workers: the first two jobs end after one typical run, the next two after two.
        assert [round(e.eta_s / typical, 6) for e in entries] == [1, 1, 2, 2]
        assert [studio.jobs.ahead(j.id) for j in waiting] == [0, 1, 2, 3]
    finally:
        studio.jobs.resume()
    for job in waiting:
        assert job.wait(120) and job.status is JobStatus.DONE


def test_a_bad_devices_setting_is_refused_with_what_to_write():
    from studio.errors import InvalidInput

    for bad, says in (("cuda:0,cuda:0", "named twice"), ("gpu", "not a device"), ("cuda:0,,cpu", "empty entry")):
        with pytest.raises(InvalidInput, match=says):
            Settings.load(env={}, devices=bad)


def test_a_requeued_job_replaces_what_its_dead_worker_wrote_but_never_recorded(tmp_path, model_cache):
    """A worker of another process killed between writing a job's PNG and recording it leaves the file (the
    start-up sweep of orphans has long run here); the job is re-queued, and its next attempt must not fail on
    that file ("already exists"), nor touch another job's files."""
    settings = Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache, ram_budget_gb=4)
    with Studio(settings) as studio:
        kept = studio.run("image", LUMINA, timeout=120)
        assert kept.status is JobStatus.DONE, kept.error
        first = studio.history.get_job(kept.id)
        kept_file = settings.outputs_dir / first.assets[0].path
        kept_bytes = kept_file.read_bytes()
        # Another process's worker (re-queueing what it loses) claims a job, writes its files and dies.
        remote = WorkerBook(studio.history.engine, lease_s=5, requeue_lost=True, host_id="remote-host")
        remote.register("remote:1", "cpu")
        studio.jobs.pause()  # so that the claim is the remote worker's, not one of ours
        job_id = studio.history.create_job(task="image", model_id=first.model_id, prompt=first.prompt,
                                           params={**first.params, "seed": 7}, seed=7)
        with Session(studio.history.engine) as s, s.begin():  # what WorkerBook.claim writes
            s.execute(update(Job).where(Job.id == job_id).values(
                status=JobStatus.RUNNING.value, started_at=utcnow(), worker="remote:1", device="cpu", attempts=1))
            s.execute(update(Worker).where(Worker.id == "remote:1").values(
                job_id=job_id, heartbeat_at=utcnow() - timedelta(seconds=60)))
        day = datetime.now().strftime("%Y-%m-%d")
        leftovers = [settings.outputs_dir / "image" / day / f"{job_id}-00.png",
                     settings.outputs_dir / "thumbnails" / day / f"{job_id}.webp"]
        for path in leftovers:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half a picture")
        studio.jobs.resume()
        # Our watcher finds the lost job and re-queues it (the dead worker's setting); one of ours runs it again.
        _wait(lambda: studio.history.get_job(job_id).status in (JobStatus.DONE, JobStatus.FAILED,
                                                                 JobStatus.INTERRUPTED), what="the re-run")
        row = studio.history.get_job(job_id)
    assert row.status is JobStatus.DONE and row.attempts == 2, row.error
    written = settings.outputs_dir / row.assets[0].path
    assert written == leftovers[0] and written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert kept_file.read_bytes() == kept_bytes  # the other job's file is untouched
