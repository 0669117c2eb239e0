"""The job queue's worker side: the state its front end and its device workers share, their start and
stop, the heartbeat, and, in a process that runs no jobs, the follower that reports when this
process's jobs finish.

A process runs one `DeviceWorker` (device_worker.py) per device. The heartbeat thread reports each of
them to the workers table every `WorkerBook.beat_s` (the job it runs and how far it got, the models it
holds), passes on cancels asked for from other processes, and reaps: the running job of a worker that
died (on any host) is marked interrupted or put back in line (history/workers.py). Workers sleep until
a submit here, a signal from another studio process (studio/wakeup.py; on PostgreSQL a NOTIFY,
history/notify.py) or the fallback poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

from .device_worker import Cancelled, DeviceWorker
from .history import AssetRecord, HistoryStore, JobStatus
from .history.workers import WorkerBook
from .job import Job, Stage
from .media import SavedFile
from .runtime.memory import MemoryScheduler
from .zoo.cards import CardRegistry

__all__ = ["Cancelled", "QueueWorker"]

log = logging.getLogger(__name__)

ProgressListener = Callable[["Job"], None]

# How often an idle worker looks at the jobs table on its own: only a fallback, since a submit here
# wakes it at once and one from another studio process signals it.
_POLL_S = 5.0
_RETRY_S = 1.0  # how soon the worker retries recording a failure the database would not take
_STOP_STEP_S = 10.0  # how long a stop waits for an interrupted job to reach its next step
# How often a process that does not run the queue looks at its unfinished jobs' rows (a read of a few
# rows; with nothing to follow it does not look at all).
_FOLLOW_S = 0.05
_FOLLOW_BESIDE_S = 0.25  # the same, beside this process's own workers (most of its jobs are theirs)
_AVAILABLE_S = 30.0  # how often a worker looks again at which models' files are on its host (downloads land)
_FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)


def _saved(outputs_dir: Path, asset: AssetRecord) -> SavedFile:
    return SavedFile(path=outputs_dir / asset.path, relpath=asset.path, kind=asset.kind, mime=asset.mime,
                     width=asset.width, height=asset.height, bytes=asset.bytes, sha256=asset.sha256,
                     duration_s=asset.duration_s)


class QueueWorker:
    """The state a queue shares between its front-end side (jobs.JobQueue) and its device workers, and
    the workers' life: start, heartbeat, stop."""

    def __init__(self, cards: CardRegistry, history: HistoryStore,
                 scheduler: MemoryScheduler | Sequence[MemoryScheduler], outputs_dir: Path, loras: Any = None, *,
                 preview_every: int = 0, poll_s: float = _POLL_S, devices: Sequence[str] | None = None,
                 book: WorkerBook | None = None) -> None:
        self._cards = cards
        self.poll_s = poll_s  # the idle worker's fallback look at the table (see _POLL_S)
        # Called after each job this process commits (Studio: signal the queue's owner, or NOTIFY on
        # PostgreSQL, where every worker of every host listens).
        self.on_submitted: Callable[[], None] | None = None
        # Called after asking another process's worker to cancel its job (PostgreSQL: NOTIFY, so it need not
        # wait for its next heartbeat).
        self.on_cancel_requested: Callable[[str], None] | None = None
        # The models whose files are on this host (Studio: the ready cards), looked at again every
        # _AVAILABLE_S; None: any (claims do not filter).
        self.ready_models: Callable[[], set[str]] | None = None
        self.available: frozenset[str] | None = None
        self._available_at = 0.0
        self.preview_every = preview_every  # a live preview every N steps, 0 = none (Settings.preview_every)
        self._history = history
        self.book = book or WorkerBook(history.engine)
        self._outputs_dir = outputs_dir
        self._loras = loras  # zoo.loras.LoraLibrary: the LoRAs a job may name (None: no LoRA folder)
        self._live: dict[str, Job] = {}  # handles of unfinished jobs, by id (front ends follow these)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._paused = False
        # A command that runs its own jobs only because no worker serves the queue (`studio generate` on a
        # shared database): it must not take other people's jobs with it when it exits.
        self.own_jobs_only = False
        self._stopping = False
        self._runs_jobs = False
        self._listeners: list[ProgressListener] = []
        self._unrecorded: dict[str, str] = {}  # job id -> the failure its row still waits for
        self._lost: set[str] = set()  # jobs whose row another process ended (this worker's lease was lost)
        schedulers = [scheduler] if isinstance(scheduler, MemoryScheduler) else list(scheduler)
        devices = list(devices) if devices is not None else [s.device for s in schedulers]
        self.workers = [DeviceWorker(self, s, d, i) for i, (s, d) in enumerate(zip(schedulers, devices, strict=True))]
        self._follower: threading.Thread | None = None
        self._seen: set[str] = set()  # followed jobs whose row the follower has read (so a missing row is a deletion)
        self._beater: threading.Thread | None = None
        self._beating = threading.Event()  # set: the heartbeat thread stops

    @property
    def routed(self) -> bool:
        """Whether other workers may share this queue (several devices here, or a database other processes'
        workers claim from), so that claims route and a worker reports its state after each job."""
        return len(self.workers) > 1 or self._history.engine.dialect.name != "sqlite"

    def running_jobs(self) -> list[Job]:
        """The jobs this process's workers are sampling now."""
        with self._lock:
            return [w.running for w in self.workers if w.running is not None]

    def saving_jobs(self) -> list[Job]:
        return [job for w in self.workers for job in w.saver.saving()]

    def start(self, run_jobs: bool = True) -> None:
        """Start a worker per device, which run what is pending in the jobs table; or, when jobs run in other
        processes (`run_jobs=False`), a follower that reports when this process's jobs finish."""
        if self._runs_jobs and any(w.alive() for w in self.workers):
            return
        if self._follower is not None and self._follower.is_alive():
            return
        self._stopping = False
        self._runs_jobs = run_jobs
        try:
            self._paused = self.book.paused()  # a pause outlives a restart (and holds on every host)
        except Exception:
            log.exception("could not read whether the queue is paused")
        if run_jobs:
            self._look_at_models()
            for worker in self.workers:
                self.book.register(worker.id, worker.device, self.available)
                worker.start()
        if not run_jobs or self.routed:  # jobs from here may run in another process: follow those
            self._follower = threading.Thread(target=self._follow, name="studio-follower", daemon=True)
            self._follower.start()
        self._beating.clear()
        self._beater = threading.Thread(target=self._beat, name="studio-heartbeat", daemon=True)
        self._beater.start()

    def stop(self, timeout: float | None = 30) -> None:
        """Stop after the running jobs and the saves handed over (pending jobs stay pending, for the next
        start or another worker). A job still running after `timeout` seconds is marked interrupted, as a
        crash would leave it, and told to stop; a save still going by then is given up the same way."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        started = time.monotonic()
        for thread in [w.thread for w in self.workers] + [self._follower]:
            if thread is not None and thread.is_alive():
                thread.join(None if timeout is None else max(0.0, timeout - (time.monotonic() - started)))
        late = [w for w in self.workers if w.alive() and w.running is not None and self._runs_jobs]
        for worker in late:
            running = worker.running
            if running is not None and not any(job is running for job in worker.saver.saving()):
                # Still sampling: its row says interrupted first (the worker's stop branch finishes the handle
                # as the row says), then it stops at its next step (the process must not exit mid-step). A job
                # already handed to the saver is not cancelled: its picture is made and is saved below.
                self._history.interrupt_running([running.id])
                running._cancel.set()
        # The saves handed over finish first: a row says done only with its files written.
        left = _STOP_STEP_S if late or timeout is None else max(0.0, timeout - (time.monotonic() - started))
        saved = [w.saver.close(left + (0 if late else _STOP_STEP_S)) for w in self.workers if self._runs_jobs]
        if late or not all(saved):
            mine = self._history.interrupt_running(self.book.running_of([w.id for w in self.workers]))
            log.warning("stopping: job(s) %s did not finish in %s s; marked interrupted (Re-run retries them)",
                        ", ".join(mine) or "?", timeout)
        for worker in late:
            if worker.thread is not None:
                worker.thread.join(_STOP_STEP_S)
        self._beating.set()
        if self._beater is not None:
            self._beater.join(5)
        if self._runs_jobs:
            try:
                self.book.unregister([w.id for w in self.workers])
            except Exception:  # the rows go stale and are reaped by whoever looks next
                log.exception("could not remove this process's worker rows")

    # -- the heartbeat ------------------------------------------------------------------------

    def look_at_models(self, every: float = _AVAILABLE_S) -> None:
        """Look again which models' files are on this host, at most every `every` seconds (a worker thread
        does, between jobs: on a slow model cache it takes a while, which a heartbeat could not spare)."""
        if time.monotonic() - self._available_at > every:
            self._look_at_models()

    def _look_at_models(self) -> None:
        if self.ready_models is None:
            return
        try:
            self.available = frozenset(self.ready_models())
        except Exception:
            log.exception("could not list the models on this host")
        self._available_at = time.monotonic()

    def _beat(self) -> None:
        """Report this process's workers, pass on cancels from elsewhere, reap dead workers' jobs."""
        devices = {w.id: w.device for w in self.workers}
        complained = 0.0
        while not self._beating.wait(self.book.beat_s):
            try:
                if self._runs_jobs:
                    beat = self.book.beat([w.state() for w in self.workers], devices)
                    for worker in self.workers:
                        job = worker.running
                        if job is not None and job.id in beat.cancel:
                            if worker.id in beat.lost:  # its row was ended by whoever reaped this worker
                                self._lost.add(job.id)
                            job._cancel.set()  # it stops at its next step
                    if beat.paused != self._paused:
                        with self._wake:
                            self._paused = beat.paused
                            self._wake.notify_all()
                if self.book.reap():
                    self.wake()  # a lost job put back in line, or a follower's job ended
            except Exception:  # the database is away: keep beating, say so now and then
                if time.monotonic() - complained > 60:
                    log.exception("heartbeat: could not reach the history database")
                    complained = time.monotonic()

    # -- shared by the workers ------------------------------------------------------------------

    def _notify(self, job: Job) -> None:
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:  # a broken listener must not fail the job
                log.exception("job listener failed")

    def _record_unrecorded(self) -> None:
        """Write the failures whose recording failed (a full disk, a database that stayed locked)."""
        for job_id, reason in list(self._unrecorded.items()):
            try:
                self._history.mark_failed(job_id, reason)
            except (KeyError, ValueError):  # deleted, or no longer running: nothing left to record
                self._unrecorded.pop(job_id, None)
                continue
            except Exception:  # still cannot write: the worker tries again on its next round
                continue
            self._unrecorded.pop(job_id, None)
            log.info("job %s: its failure is recorded now that the database takes writes again", job_id)

    def _idle_wait(self) -> float:
        # A failure the database would not take is retried soon; otherwise the poll is only a fallback
        # for a wake-up that did not come (a submit here notifies at once, another process's signals).
        return min(self.poll_s, _RETRY_S) if self._unrecorded else self.poll_s

    def _record_later(self, job_id: str, reason: str) -> None:
        self._unrecorded[job_id] = reason
        self._record_unrecorded()
        with self._wake:
            self._wake.notify_all()  # the worker retries what is still unrecorded on its next round

    def _settle(self, job: Job) -> None:
        """The end of a job, from a worker or a saver: its handle leaves the live set, then its done event
        fires and the listeners hear it (the handle `submit` returned, if that is another object)."""
        with self._lock:
            handle = self._live.pop(job.id, None)
        self._lost.discard(job.id)
        for finished in {id(j): j for j in (job, handle) if j is not None}.values():
            if finished.status not in _FINISHED:
                finished.status = JobStatus.FAILED
                finished.error = finished.error or "Internal error: the job ended without a result"
            finished._done.set()
            self._notify(finished)

    def _follow(self) -> None:
        """Watch this process's jobs that other processes' workers run (all of them, in a process that runs
        no jobs) in the database until they finish, with the progress their workers report."""
        every = _FOLLOW_S if not self._runs_jobs else _FOLLOW_BESIDE_S
        while True:
            with self._wake:
                if self._stopping:
                    return
                self._wake.wait(every if self._live else None)  # a submit here wakes it
                live = list(self._live.values())
            if self._runs_jobs:  # the ones this process's own workers have are settled by them
                here = {id(job) for job in self.running_jobs() + self.saving_jobs()}
                live = [job for job in live if id(job) not in here]
            if live:
                self._follow_round(live)

    def _follow_round(self, live: list[Job]) -> None:
        mine = {w.id for w in self.workers}
        try:  # one read for all of them; a finished one's files are read below
            statuses = self.book.statuses(job.id for job in live)
        except Exception:
            log.exception("follower: could not read this process's jobs")
            return
        running: list[Job] = []
        for job in live:
            if job.id not in statuses:
                # Not yet committed (submit makes the handle first), or deleted meanwhile (the gallery of
                # another process) once its row had been seen.
                if job.id in self._seen:
                    self._seen.discard(job.id)
                    with self._lock:
                        self._live.pop(job.id, None)
                    job._finish(JobStatus.FAILED, "this job was deleted from the history")
                    self._notify(job)
                continue
            self._seen.add(job.id)
            status, device, worker = statuses[job.id]
            if status is JobStatus.PENDING or (self._runs_jobs and worker in mine):
                continue
            if status is JobStatus.RUNNING:
                job.device = device or ""
                running.append(job)
                if job.status is JobStatus.PENDING:
                    job.status = JobStatus.RUNNING
                    job.started = time.monotonic()
                    self._notify(job)
                continue
            try:
                record = self._history.get_job(job.id)
            except Exception:
                log.exception("follower: could not read job %s", job.id)
                continue
            if record is None:
                continue
            job.outputs = [_saved(self._outputs_dir, a) for a in record.assets if a.kind != "thumbnail"]
            self._seen.discard(job.id)
            with self._lock:
                self._live.pop(job.id, None)
            job._finish(record.status, record.error)
            self._notify(job)
        self._follow_progress(running)

    def _follow_progress(self, running: list[Job]) -> None:
        """The steps other processes' workers report for the jobs followed here (at their heartbeat)."""
        if not running:
            return
        try:
            progress = self.book.progress(job.id for job in running)
        except Exception:
            return
        for job in running:
            step, total = progress.get(job.id, (job.step, job.total_steps))
            if (step, total) != (job.step, job.total_steps) and total:
                job.step, job.total_steps = step, total
                job.stage = Stage.DECODING if step >= total else Stage.STEPS
                self._notify(job)
