"""One device's worker: the thread that claims jobs suited to its device and runs them there.

A studio process has one `DeviceWorker` per device it was given (`--devices cuda:0,cuda:1`), each
with its own memory scheduler and budget, its own saver and its own row in the workers table
(history/workers.py). It claims through the shared table, so the jobs of every front end on every
host are one line: a job goes to the worker that holds its model, else to the least loaded one. It
acquires the pipeline from its scheduler, runs the task with per-step progress and hands the output
to its saver (job_saver.py), which writes the files and records the job done, or failed with a
reason. A running job stops at its next step when cancelled, here or from another host. Nothing a
job does can kill the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from .errors import StudioError, internal_reason
from .families import FAMILIES
from .history import JobRecord, JobStatus
from .history.store import NotOwned
from .history.workers import WorkerState
from .job import Job, Stage
from .job_memory import run_with_memory
from .job_saver import FinishedRun, Saver
from .media import remove_job_leftovers
from .runtime.memory import MemoryScheduler
from .tasks import get_task

log = logging.getLogger(__name__)

_SAVES_WAITING = 1  # finished outputs that may wait for the saver (each holds its pictures in RAM)
_PROCESS_TOKEN = uuid.uuid4().hex[:6]  # two studios in one process (tests) never share a worker id


class Cancelled(Exception):
    """Raised from the step callback when the user cancelled the running job (not a failure)."""


class DeviceWorker:
    """A worker thread bound to one device (or device group) and its memory scheduler."""

    # `queue` is the job_worker.QueueWorker whose shared state (live handles, wake-ups, listeners) it uses.
    def __init__(self, queue: Any, scheduler: MemoryScheduler, device: str, index: int) -> None:
        self.queue = queue
        self.scheduler = scheduler
        self.device = device
        self.id = f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}:{index}"[:200]
        self.running: Job | None = None
        self.models: tuple[str, ...] = ()  # what its scheduler held at its last look (see _look)
        self.load = 0.0
        self.thread: threading.Thread | None = None
        self.saver = Saver(queue._history, queue._outputs_dir, queue._settle, queue._record_later,
                           waiting=_SAVES_WAITING, worker=self.id)

    def start(self) -> None:
        self.saver.start()
        self.thread = threading.Thread(target=self._work, name=f"studio-worker-{self.device}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def _look(self) -> None:
        """Note what its scheduler holds and the share of its budget in use (what "least loaded" compares),
        from this worker's own thread: the heartbeat reads these notes, because asking the scheduler could
        wait for a whole model load (its lock is held meanwhile) and the beat would miss its lease."""
        budget = self.scheduler.device_budget()
        self.models = tuple(self.scheduler.resident())
        self.load = min(1.0, self.scheduler.device_used() / budget) if budget else 0.0

    def state(self) -> WorkerState:
        job = self.running
        available = self.queue.available
        return WorkerState(self.id, job.id if job else None, job.step if job else 0, job.total_steps if job else 0,
                           self.models, self.load, None if available is None else tuple(sorted(available)))

    # -- the loop ----------------------------------------------------------------------------

    def _work(self) -> None:
        q = self.queue
        while True:
            if q._unrecorded:
                q._record_unrecorded()
            with q._wake:
                if q._stopping:
                    return
                if q._paused:
                    q._wake.wait(q._idle_wait())
                    continue
            try:
                self._look()
                if q.routed:
                    q.look_at_models()
                claim = q.book.claim(self.id, self.device, self.models, self.load, q.available,
                                     only=list(q._live) if q.own_jobs_only else None)
            except Exception:  # e.g. the database stayed locked or is unreachable: wait and look again
                log.exception("worker %s: could not read the queue", self.device)
                claim = None
            record = claim.job if claim is not None else None
            if record is None:
                with q._wake:
                    if not q._stopping:
                        retry = claim.retry_s if claim is not None else None
                        q._wake.wait(min(q._idle_wait(), retry) if retry else q._idle_wait())
                continue
            self._one(record)

    def _one(self, record: JobRecord) -> None:
        q = self.queue
        job: Job | None = None
        handed = False
        try:
            job = self._handle(record)
            if job.spec is not None:
                handed = self._run(job)
        except Exception as err:  # _run records its own failures; this is when recording itself failed
            log.exception("worker: unexpected error around job %s", record.id)
            job = job or Job(id=record.id, task=record.task, spec=None)
            job.error = job.error or internal_reason(err)
            job.status = JobStatus.FAILED
            # Its row must not stay `running`: recorded failed as soon as the database takes writes again.
            q._record_later(record.id, f"The job's result could not be recorded: {internal_reason(err)}")
        finally:
            with q._lock:
                self.running = None
            if not handed:  # else the saver settles it once its files and rows are written
                q._settle(job or Job(id=record.id, task=record.task, spec=None))
            if q.routed:
                try:  # idle again, with what it holds now: the other workers route by it before the next heartbeat
                    self._look()
                    q.book.report(self.state())
                except Exception:
                    log.exception("worker %s: could not report its state", self.device)

    def _handle(self, record: JobRecord) -> Job:
        """The live handle of a claimed job: the one `submit` returned, or (for a job submitted by another
        process, or left pending by a previous run) a new one from its recorded, already resolved parameters."""
        q = self.queue
        with q._lock:
            job = q._live.get(record.id)
        if job is None:
            try:
                spec = get_task(record.task).spec_type.parse(record.params)
            except StudioError as err:
                q._history.mark_failed(record.id, f"could not resume this job: {err}")
                return Job(id=record.id, task=record.task, spec=None, status=JobStatus.FAILED, error=str(err))
            job = Job(id=record.id, task=record.task, spec=spec, total_steps=int(getattr(spec, "steps", 0) or 0))
        job.device = self.device
        if record.attempts > 1 and not record.assets:
            # A lost worker's job, re-queued: what that attempt wrote and never recorded is in the way of this one.
            removed = remove_job_leftovers(q._outputs_dir, record.id)
            if removed:
                log.info("job %s: removed %d unrecorded file(s) of its earlier attempt", record.id, removed)
        with q._lock:
            q._live[job.id] = job
            self.running = job
        return job

    def _run(self, job: Job) -> bool:
        """Sample the job and hand its output to the saver (True), or record how it ended (False)."""
        q = self.queue
        assert job.spec is not None
        task = get_task(job.task)
        job.status = JobStatus.RUNNING
        job.started = time.monotonic()
        q._notify(job)
        try:
            card = q._cards.get(job.spec.model)
            family = FAMILIES.of(card)
            job.step_unit = family.step_unit if family is not None else "steps"

            def on_stage(stage: Stage, detail: str) -> None:
                job.stage, job.stage_detail = stage, detail
                q._notify(job)

            def on_step(step: int, total: int) -> None:
                if job._cancel.is_set():
                    raise Cancelled()  # stops the pipeline between two steps
                job.step, job.total_steps = step, total
                # After the last step a pipeline decodes its latents (or tokens) into the output.
                job.stage = Stage.DECODING if total and step >= total else Stage.STEPS
                q._notify(job)

            output = run_with_memory(self.scheduler, q._history, job, task, card, on_step, on_stage,
                                     q._loras, preview_every=q.preview_every)
            if job._cancel.is_set():
                raise Cancelled()
        except Cancelled:
            if q._stopping or job.id in q._lost:  # its row already says interrupted (a stop, or a lost lease)
                job._finish(JobStatus.INTERRUPTED, "the studio stopped while this job ran")
                return False
            try:
                q._history.mark_cancelled(job.id, worker=self.id)
            except NotOwned:
                job._finish(JobStatus.INTERRUPTED, "another worker runs this job now")
                return False
            job._finish(JobStatus.CANCELLED)
            return False
        except Exception as err:
            self._fail(job, err)
            return False
        on_stage(Stage.SAVING, "")
        self.saver.hand_over(FinishedRun(job, task, card, output, datetime.now(timezone.utc)))
        return True

    def _fail(self, job: Job, err: Exception) -> None:
        if isinstance(err, StudioError):
            reason = str(err)
        else:
            log.exception("job %s failed", job.id)
            reason = internal_reason(err)
        try:
            self.queue._history.mark_failed(job.id, reason, worker=self.id)
        except NotOwned:
            job._finish(JobStatus.INTERRUPTED, "another worker runs this job now")
            return
        job.error = reason
        job.status = JobStatus.FAILED
