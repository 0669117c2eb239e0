"""The job queue: every generation, from any front end, is submitted here and run by one worker.

submit(task, params) validates the parameters into a TaskSpec resolved against its model card and
records the job (pending). The queue *is* the jobs table: the worker (job_worker.py) claims the
oldest pending row, runs it, and the saver (job_saver.py) writes its outputs and records the job
done with its assets, or failed with a reason. So a restart loses nothing: pending jobs run when the
studio comes back, and jobs that were running are marked interrupted (the Studio does that before
starting the worker).

Bad input never reaches the worker: the job row is recorded failed with the message straight away.
A pending job can be cancelled at once; a running one stops at its next step. The queue can be
paused (the running job finishes, nothing new starts).
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from typing import Any, Mapping

from .errors import InvalidInput, StudioError
from .history import JobRecord, JobStatus
from .history.tables import utcnow
from .history.bounds import MAX_ERROR, clip
from .job import Job, QueueEntry
from .job_worker import Cancelled, ProgressListener, QueueWorker
from .tasks import get_task
from .tasks.inputs import keep_inputs

__all__ = ["Cancelled", "Job", "JobQueue", "ProgressListener"]

log = logging.getLogger(__name__)

_MAX_REJECTED_FIELDS = 50
_MAX_REJECTED_CHARS = 2000


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:_MAX_REJECTED_CHARS]


class JobQueue(QueueWorker):
    """Submit, cancel, pause and inspect jobs (the worker side, and the constructor, are QueueWorker's)."""

    # -- front-end side -------------------------------------------------------------------------

    def submit(self, task_name: str, params: Mapping[str, Any]) -> Job:
        """Validate and enqueue a job. Invalid input gives a job that is already failed, with the reason."""
        try:
            task = get_task(task_name)
            parsed = task.spec_type.parse(params)  # its own faults first (unknown fields), then the model's
            spec = parsed.resolved(card := self._cards.get(str(params.get("model", ""))))
            if getattr(spec, "loras", None):  # names, files and headers checked before the job queues
                if self._loras is None:
                    raise InvalidInput("loras: this studio has no LoRA folder")
                self._loras.for_job(spec.loras, card)
            spec = keep_inputs(spec, self._outputs_dir)  # the job's own copy of each file it was given
        except StudioError as err:
            return self._record_rejected(task_name, params, str(err))
        # The handle is known before its row exists: the worker may claim the row the moment it is
        # committed, and must then find this handle (the one the caller follows), not make its own.
        job = Job(id=uuid.uuid4().hex, task=task.name, spec=spec, total_steps=int(getattr(spec, "steps", 0) or 0))
        with self._lock:
            self._live[job.id] = job
        try:
            self._history.create_job(job_id=job.id, task=task.name, model_id=spec.model, prompt=spec.prompt,
                                     negative_prompt=spec.negative_prompt, params=spec.model_dump(mode="json"),
                                     seed=spec.seed)
        except BaseException:
            with self._lock:
                self._live.pop(job.id, None)
            raise
        with self._wake:
            self._wake.notify_all()
        if self.on_submitted is not None:
            try:
                self.on_submitted()
            except Exception:  # only a wake-up: the queue's owner finds the job at its next look anyway
                log.exception("could not signal the queue's owner")
        return job

    def wake(self) -> None:
        """Have the idle worker (or the follower) look at the jobs table now."""
        with self._wake:
            self._wake.notify_all()

    def get(self, job_id: str) -> Job | None:
        """The live handle of an unfinished job (None once it has finished or if it is not known)."""
        with self._lock:
            return self._live.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a pending job at once, a running one at its next step (here, or through its row when a
        worker of another process runs it), or one whose output waits for the saver before it is written.
        False if it had finished. (One already being saved still finishes done.)"""
        with self._lock:
            job = self._live.get(job_id)
        if job is not None:
            job._cancel.set()  # if a worker here has just claimed it, it stops at the first step
        # Only a row still pending is cancelled here: a worker's claim and this are each one write
        # transaction, so exactly one of them wins.
        was_pending = self._history.cancel_pending(job_id)
        if was_pending and job is not None:
            with self._lock:
                self._live.pop(job_id, None)
            job._finish(JobStatus.CANCELLED)
            self._notify(job)
        if was_pending:
            return True
        if any(j.id == job_id for j in self.running_jobs() + self.saving_jobs()):
            return True
        asked = self.book.request_cancel(job_id)  # run elsewhere: its worker reads this at its heartbeat
        if asked and self.on_cancel_requested is not None:
            self.on_cancel_requested(job_id)
        return asked

    def pause(self) -> None:
        """Start nothing new, on any worker of this queue (running jobs finish); jobs can still be submitted.
        The pause is kept in the database: it holds for every host, and after a restart."""
        self.book.set_paused(True)
        with self._wake:
            self._paused = True

    def resume(self) -> None:
        self.book.set_paused(False)
        with self._wake:
            self._paused = False
            self._wake.notify_all()
        if self.on_submitted is not None:  # the other processes' workers look at the queue now
            self.on_submitted()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def save_wait_s(self) -> float:
        """How long the workers have waited, in all, for room to hand a finished job to a saver."""
        return sum(w.saver.blocked_s for w in self.workers)

    def _running_elsewhere(self) -> list[tuple[JobRecord, float | None]]:
        """Jobs other processes' workers run now, with each one's time left (None: not known)."""
        mine = {w.id for w in self.workers}
        out = []
        for worker in self.book.live(exclude=mine):
            record = self._history.get_job(worker.job_id) if worker.job_id else None
            if record is None or record.status is not JobStatus.RUNNING:
                continue
            typical = self._typical(record.task, record.model_id)
            elapsed = (utcnow() - record.started_at).total_seconds() if record.started_at else 0.0
            if worker.step and worker.total_steps:
                left: float | None = elapsed / worker.step * (worker.total_steps - worker.step)
            else:
                left = max(0.0, typical - elapsed) if typical is not None else None
            out.append((record, left))
        return out

    def _worker_count(self) -> int:
        """How many workers share this queue's line (every host's), for ETAs; at least one."""
        if self._runs_jobs and not self.routed:
            return 1  # the common case: one studio, one device, nothing to ask the database
        return max(1, len(self.book.live()))

    def position(self, job_id: str) -> int | None:
        """0 while running, n when n-1 jobs are ahead of it in line, None when not queued."""
        if any(job.id == job_id for job in self.running_jobs()):
            return 0
        pending = self._history.pending_ids()
        if job_id in pending:
            return pending.index(job_id) + 1
        record = self._history.get_job(job_id) if not self._runs_jobs or self.routed else None
        return 0 if record is not None and record.status is JobStatus.RUNNING else None

    def ahead(self, job_id: str) -> int | None:
        """How many jobs will run before this pending one (the running ones included); None if not pending."""
        position = self.position(job_id)
        if not position:
            return None
        return position - 1 + len(self.running_jobs())

    def snapshot(self) -> list[QueueEntry]:
        """The running jobs (of every worker) and the pending ones in order, with their progress and an ETA
        each: each pending job goes, in turn, to the worker that is free first."""
        running = self.running_jobs()
        entries: list[QueueEntry] = [  # sampled, their files being written (they finish first)
            QueueEntry(job.id, job.task, job.spec.model, job.spec.prompt, JobStatus.RUNNING, 0, job.step,
                       job.total_steps, 0.0, job.describe())
            for job in self.saving_jobs() if job.spec is not None and job not in running]
        free_at: list[float | None] = []  # seconds from now until each worker is free
        for job in running:
            if job.spec is None:
                continue
            left = self._remaining(job)
            free_at.append(left)
            entries.append(QueueEntry(job.id, job.task, job.spec.model, job.spec.prompt, JobStatus.RUNNING, 0,
                                      job.step, job.total_steps, left, job.describe()))
        if not self._runs_jobs or self.routed:
            for record, left in self._running_elsewhere():
                free_at.append(left)
                entries.append(QueueEntry(record.id, record.task, record.model_id, record.prompt,
                                          JobStatus.RUNNING, 0, 0, 0, left, "running on " + (record.device or "?")))
        free_at += [0.0] * max(0, self._worker_count() - len(free_at))
        estimates: dict[tuple[str, str], float | None] = {}
        for position, record in enumerate(self._history.pending_jobs(), start=1):
            key = (record.task, record.model_id)
            if key not in estimates:
                estimates[key] = self._typical(*key)
            known = [t for t in free_at if t is not None]
            eta: float | None = None
            if len(known) == len(free_at) and estimates[key] is not None:
                slot = free_at.index(min(known))
                eta = free_at[slot] = min(known) + estimates[key]
            else:  # a worker's time left is not known: neither is this job's, nor any after it
                free_at = [None] * len(free_at)
            steps = record.params.get("steps")
            entries.append(QueueEntry(record.id, record.task, record.model_id, record.prompt, JobStatus.PENDING,
                                      position, 0, steps if isinstance(steps, int) else 0, eta))
        return entries

    def _typical(self, task: str, model_id: str) -> float | None:
        durations = self._history.recent_durations(task, model_id)
        return statistics.median(durations) if durations else None

    def _remaining(self, job: Job) -> float | None:
        """The running job's time left: from its own pace once it has made steps, else from history."""
        if job.started is None:
            return None
        elapsed = time.monotonic() - job.started
        if job.step > 0 and job.total_steps:
            return max(0.0, elapsed / job.step * (job.total_steps - job.step))
        typical = self._typical(job.task, job.spec.model) if job.spec else None
        return max(0.0, typical - elapsed) if typical is not None else None

    def _record_rejected(self, task_name: str, params: Mapping[str, Any], reason: str) -> Job:
        # What was sent is kept for the user to see and fix, within bounds: a refused request must not
        # be a way to fill the database (or its search index) with megabytes, nor to store a value
        # that cannot be read back (the store makes every field storable).
        raw = {str(k)[:64]: v if isinstance(v, (int, float, bool, type(None))) else _clip(v)
               for k, v in list(params.items())[:_MAX_REJECTED_FIELDS]}
        reason = clip(reason, MAX_ERROR)
        job_id = self._history.create_job(
            task=str(task_name)[:32],
            model_id=str(params.get("model", ""))[:128],
            prompt=_clip(params.get("prompt", "")),
            negative_prompt=_clip(params.get("negative_prompt", "")),
            params=raw,
            seed=None,
            refused=reason,
        )
        job = Job(id=job_id, task=str(task_name)[:32], spec=None, status=JobStatus.FAILED, error=reason)
        job._done.set()
        return job

    def add_listener(self, listener: ProgressListener) -> None:
        """Called whenever a job changes status or makes progress: from the worker thread while it runs,
        from the saver thread when it is done (or failed while saving)."""
        self._listeners.append(listener)
