"""The workers table's rules (history/workers.py) on both databases: routing claims, leases, re-queues,
cancel and pause flags. Worker rows are written as other processes' workers would write them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from studio.history import HistoryStore, JobStatus
from studio.history.tables import Worker, utcnow
from studio.history.workers import MAX_ATTEMPTS, WorkerBook


@pytest.fixture
def store(db_url):
    s = HistoryStore(db_url)
    yield s
    s.close()


def _job(store: HistoryStore, model: str = "model-a") -> str:
    return store.create_job(task="image", model_id=model, prompt="p", params={"model": model}, seed=1)


def _age(store: HistoryStore, worker_id: str, seconds: float) -> None:
    """What a worker that stopped beating `seconds` ago leaves."""
    with Session(store.engine) as s, s.begin():
        s.execute(update(Worker).where(Worker.id == worker_id)
                  .values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def _claimed_elsewhere(store: HistoryStore, worker_id: str) -> tuple[WorkerBook, str]:
    """A job claimed by a worker of another host that re-queues what it loses, and a watcher's book here."""
    remote = WorkerBook(store.engine, lease_s=5, requeue_lost=True, host_id="remote-host")
    remote.register(worker_id, "cuda:0")
    job = _job(store)
    assert remote.claim(worker_id, "cuda:0").job.id == job
    return WorkerBook(store.engine, lease_s=5, host_id="watcher-host"), job


def test_a_job_for_a_model_this_host_lacks_is_left_to_a_host_that_has_it(store):
    book = WorkerBook(store.engine, host_id="host-a")
    elsewhere = WorkerBook(store.engine, host_id="host-b")
    book.register("a:1", "cuda:0", available=["model-a"])
    elsewhere.register("b:1", "cuda:0", available=["model-a", "model-b"])
    job = _job(store, "model-b")
    assert book.claim("a:1", "cuda:0", available={"model-a"}).job is None
    claimed = elsewhere.claim("b:1", "cuda:0", available={"model-a", "model-b"}).job
    assert claimed.id == job and (claimed.worker, claimed.device) == ("b:1", "cuda:0")
    # Nobody has it: taken anyway, so that it fails with the message saying what to download.
    other = _job(store, "model-c")
    assert book.claim("a:1", "cuda:0", available={"model-a"}).job.id == other


def test_an_idle_worker_holding_the_model_gets_the_job_and_a_busy_one_does_not_hold_it_up(store):
    book = WorkerBook(store.engine)
    book.register("holder", "cuda:0")
    book.register("empty", "cuda:1")
    from studio.history.workers import WorkerState

    book.report(WorkerState("holder", models=("model-a",), load=0.5))
    job = _job(store)
    deferred = book.claim("empty", "cuda:1")
    assert deferred.job is None and 0 < deferred.retry_s <= 2.0  # left a moment for the holder
    assert book.claim("holder", "cuda:0", holds={"model-a"}).job.id == job
    # Now the holder is busy: a second job for its model goes to the idle worker at once.
    second = _job(store)
    assert book.claim("empty", "cuda:1").job.id == second


def test_a_silent_worker_loses_its_job_after_the_lease_and_its_row(store):
    watcher = WorkerBook(store.engine, lease_s=5, host_id="watcher-host")
    remote = WorkerBook(store.engine, lease_s=5, host_id="remote-host")
    remote.register("remote:1", "cuda:0")
    job = _job(store)
    assert remote.claim("remote:1", "cuda:0").job.id == job
    _age(store, "remote:1", 3)
    assert watcher.reap() == [] and store.get_job(job).status is JobStatus.RUNNING  # late, not dead
    _age(store, "remote:1", 6)
    assert watcher.reap() == [job]
    record = store.get_job(job)
    assert record.status is JobStatus.INTERRUPTED and "remote:1" in record.error
    assert watcher.live() == []


def test_requeued_lost_jobs_run_again_at_most_once_more(store):
    # The dead worker's own setting decides, whoever notices (the watcher would interrupt its own).
    watcher = WorkerBook(store.engine, lease_s=5, host_id="watcher-host")
    remote = WorkerBook(store.engine, lease_s=5, requeue_lost=True, host_id="remote-host")
    job = _job(store)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        remote.register("remote:1", "cuda:0")
        assert remote.claim("remote:1", "cuda:0").job.id == job
        _age(store, "remote:1", 10)
        assert watcher.reap() == [job]
        expected = JobStatus.PENDING if attempt < MAX_ATTEMPTS else JobStatus.INTERRUPTED
        assert store.get_job(job).status is expected
    assert store.pending_ids() == []


def test_a_job_running_without_a_live_worker_is_ended_at_start_up(store):
    """Rows left running by a studio from before workers had rows, or whose worker's row is gone."""
    legacy = _job(store)
    store.claim_next()
    assert WorkerBook(store.engine).reap() == [legacy]
    assert store.get_job(legacy).status is JobStatus.INTERRUPTED


def test_cancel_and_pause_flags_reach_the_worker_through_the_database(store):
    book = WorkerBook(store.engine)
    book.register("w", "cpu")
    job = _job(store)
    assert book.claim("w", "cpu").job.id == job
    from studio.history.workers import WorkerState

    assert book.beat([WorkerState("w", job_id=job, step=3, total_steps=10)], {"w": "cpu"}).cancel == frozenset()
    assert book.progress([job]) == {job: (3, 10)}
    assert book.request_cancel(job) and not book.request_cancel("no-such-job")
    assert book.beat([WorkerState("w", job_id=job)], {"w": "cpu"}).cancel == {job}
    book.set_paused(True)
    _job(store)
    assert book.claim("w", "cpu").job is None and book.beat([], {}).paused
    book.set_paused(False)
    assert book.claim("w", "cpu").job is not None


def test_a_worker_taken_for_dead_cannot_end_the_job_another_worker_took_over(store):
    from studio.history.store import NotOwned

    watcher, job = _claimed_elsewhere(store, "cut-off")
    _age(store, "cut-off", 10)  # its host lost the database for longer than the lease
    assert watcher.reap() == [job]
    watcher.register("taker", "cuda:0")
    assert watcher.claim("taker", "cuda:0").job.id == job
    with pytest.raises(NotOwned):  # the cut-off worker comes back and finishes: not its job any more
        store.mark_done(job, [], worker="cut-off")
    with pytest.raises(NotOwned):
        store.mark_cancelled(job, worker="cut-off")
    store.mark_done(job, [], worker="taker")
    assert store.get_job(job).status is JobStatus.DONE


def test_a_job_cancelled_before_its_worker_died_is_not_run_again(store):
    watcher, job = _claimed_elsewhere(store, "remote:1")
    assert watcher.request_cancel(job)
    _age(store, "remote:1", 10)  # it died before its next heartbeat could read the cancel
    assert watcher.reap() == [job]
    assert store.get_job(job).status is JobStatus.CANCELLED and store.pending_ids() == []
