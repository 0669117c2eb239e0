"""The job queue: every generation, from any front end, is submitted here and run by one worker.

submit(task, params) validates the parameters into a TaskSpec resolved against its model card and
records the job (pending). The queue *is* the jobs table: the worker thread (one per device) claims
the oldest pending row, acquires the pipeline from the MemoryScheduler, runs the task with per-step
progress, saves the outputs, and records the job done with its assets, or failed with a reason. So a
restart loses nothing: pending jobs run when the studio comes back, and jobs that were running are
marked interrupted (the Studio does that before starting the worker).

Bad input never reaches the worker: the job row is recorded failed with the message straight away.
A pending job can be cancelled at once; a running one stops at its next step (the step callback
raises). The queue can be paused (the running job finishes, nothing new starts). Nothing a job does
can kill the worker.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping


from .errors import InvalidInput, StudioError, internal_reason

from .history import AssetRecord, HistoryStore, JobRecord, JobStatus
from .history.bounds import MAX_ERROR, clip
from .media import SavedFile, save_thumbnail, thumbnail_relpath, thumbnail_source
from .runtime.memory import MemoryScheduler
from .tasks import get_task
from .families import FAMILIES
from .job import Job, QueueEntry, Stage
from .job_memory import run_with_memory
from .tasks.base import JobContext
from .tasks.inputs import keep_inputs
from .zoo.cards import CardRegistry

log = logging.getLogger(__name__)

ProgressListener = Callable[["Job"], None]


class Cancelled(Exception):
    """Raised from the step callback when the user cancelled the running job (not a failure)."""


# How often the idle worker looks at the jobs table on its own (a submit wakes it at once).
_POLL_S = 1.0
_STOP_STEP_S = 10.0  # how long a stop waits for an interrupted job to reach its next step
_FOLLOW_S = 0.5  # how often a process that does not run the queue looks at its jobs' rows
_MAX_REJECTED_FIELDS = 50
_MAX_REJECTED_CHARS = 2000
_FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED)


def _saved(outputs_dir: Path, asset: AssetRecord) -> SavedFile:
    return SavedFile(path=outputs_dir / asset.path, relpath=asset.path, kind=asset.kind, mime=asset.mime,
                     width=asset.width, height=asset.height, bytes=asset.bytes, sha256=asset.sha256,
                     duration_s=asset.duration_s)


def _clip(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:_MAX_REJECTED_CHARS]


class JobQueue:
    def __init__(self, cards: CardRegistry, history: HistoryStore, scheduler: MemoryScheduler,
                 outputs_dir: Path, loras: Any = None, *, preview_every: int = 0) -> None:
        self._cards = cards
        self.preview_every = preview_every  # a live preview every N steps, 0 = none (Settings.preview_every)
        self._history = history
        self._scheduler = scheduler
        self._outputs_dir = outputs_dir
        self._loras = loras  # zoo.loras.LoraLibrary: the LoRAs a job may name (None: no LoRA folder)
        self._live: dict[str, Job] = {}  # handles of unfinished jobs, by id (front ends follow these)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._paused = False
        self._stopping = False
        self._running: Job | None = None
        self._worker: threading.Thread | None = None
        self._runs_jobs = False
        self._listeners: list[ProgressListener] = []
        self._unrecorded: dict[str, str] = {}  # job id -> the failure its row still waits for

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
        return job

    def get(self, job_id: str) -> Job | None:
        """The live handle of an unfinished job (None once it has finished or if it is not known)."""
        with self._lock:
            return self._live.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel a pending job at once, or a running one at its next step. False if it had finished.

        (A job running in another studio process can only be cancelled there.)"""
        with self._lock:
            job = self._live.get(job_id)
        if job is not None:
            job._cancel.set()  # if the worker has just claimed it, it stops at the first step
        # Only a row still pending is cancelled here: the worker's claim and this are each one write
        # transaction, so exactly one of them wins.
        was_pending = self._history.cancel_pending(job_id)
        if was_pending and job is not None:
            with self._lock:
                self._live.pop(job_id, None)
            job._finish(JobStatus.CANCELLED)
            self._notify(job)
        return was_pending or (job is not None and self._runs_jobs)

    def pause(self) -> None:
        """Start nothing new (the running job finishes); jobs can still be submitted."""
        with self._wake:
            self._paused = True

    def resume(self) -> None:
        with self._wake:
            self._paused = False
            self._wake.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def position(self, job_id: str) -> int | None:
        """0 while running, n when n-1 jobs are ahead of it in line, None when not queued."""
        with self._lock:
            if self._running is not None and self._running.id == job_id:
                return 0
        pending = self._history.pending_ids()
        return pending.index(job_id) + 1 if job_id in pending else None

    def ahead(self, job_id: str) -> int | None:
        """How many jobs will run before this pending one (the running job included); None if not pending."""
        position = self.position(job_id)
        if not position:
            return None
        with self._lock:
            return position - 1 + (self._running is not None)

    def snapshot(self) -> list[QueueEntry]:
        """The running job and the pending ones in order, with their progress and an ETA each."""
        with self._lock:
            running = self._running
        entries: list[QueueEntry] = []
        clock = 0.0  # seconds from now until the previous entry is done
        if running is not None and running.spec is not None:
            clock = self._remaining(running)
            entries.append(QueueEntry(running.id, running.task, running.spec.model, running.spec.prompt,
                                      JobStatus.RUNNING, 0, running.step, running.total_steps, clock,
                                      running.describe()))
        estimates: dict[tuple[str, str], float | None] = {}
        for position, record in enumerate(self._history.pending_jobs(), start=1):
            key = (record.task, record.model_id)
            if key not in estimates:
                estimates[key] = self._typical(*key)
            clock = clock + estimates[key] if clock is not None and estimates[key] is not None else None
            steps = record.params.get("steps")
            entries.append(QueueEntry(record.id, record.task, record.model_id, record.prompt, JobStatus.PENDING,
                                      position, 0, steps if isinstance(steps, int) else 0, clock))
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
        """Called (from the worker thread) whenever a job changes status or makes progress."""
        self._listeners.append(listener)

    # -- worker side -----------------------------------------------------------------------------

    def start(self, run_jobs: bool = True) -> None:
        """Start the worker, which runs what is pending in the jobs table, oldest first; or, when another
        process owns the queue (`run_jobs=False`), a follower that reports when this process's jobs finish."""
        if self._worker is None or not self._worker.is_alive():
            self._stopping = False
            target, name = (self._work, "studio-worker") if run_jobs else (self._follow, "studio-follower")
            self._worker = threading.Thread(target=target, name=name, daemon=True)
            self._runs_jobs = run_jobs
            self._worker.start()

    def stop(self, timeout: float | None = 30) -> None:
        """Stop after the running job (pending jobs stay pending, for the next start). One still running
        after `timeout` seconds is marked interrupted, as a crash would leave it, and told to stop."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout)
            running = self._running
            if self._worker.is_alive() and running is not None and self._runs_jobs:
                interrupted = self._history.interrupt_running()
                log.warning("stopping: job(s) %s did not finish in %s s; marked interrupted (Re-run retries them)",
                            ", ".join(interrupted) or running.id, timeout)
                running._cancel.set()  # it stops at its next step; the process must not exit mid-step
                self._worker.join(_STOP_STEP_S)

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

    def _work(self) -> None:
        while True:
            if self._unrecorded:
                self._record_unrecorded()
            with self._wake:
                if self._stopping:
                    return
                if self._paused:
                    self._wake.wait(_POLL_S)
                    continue
            try:
                record = self._history.claim_next()
            except Exception:  # e.g. the database stayed locked: wait and look again
                log.exception("worker: could not read the queue")
                record = None
            if record is None:
                with self._wake:
                    if not self._stopping:
                        self._wake.wait(_POLL_S)
                continue
            job: Job | None = None
            try:
                job = self._handle(record)
                if job.spec is not None:
                    self._run(job)
            except Exception as err:  # _run records its own failures; this is when recording itself failed
                log.exception("worker: unexpected error around job %s", record.id)
                job = job or Job(id=record.id, task=record.task, spec=None)
                job.error = job.error or internal_reason(err)
                job.status = JobStatus.FAILED
                # Its row must not stay `running`: recorded failed as soon as the database takes writes again.
                self._unrecorded[record.id] = f"The job's result could not be recorded: {internal_reason(err)}"
                self._record_unrecorded()
            finally:
                with self._lock:
                    self._running = None
                    handle = self._live.pop(record.id, None)
                for finished in {id(j): j for j in (job, handle) if j is not None}.values():
                    if finished.status not in _FINISHED:
                        finished.status = JobStatus.FAILED
                        finished.error = finished.error or "Internal error: the job ended without a result"
                    finished._done.set()
                    self._notify(finished)

    def _follow(self) -> None:
        """Another process runs the jobs: watch this process's jobs in the database until they finish."""
        while True:
            with self._wake:
                if self._stopping:
                    return
                self._wake.wait(_FOLLOW_S)
                live = list(self._live.values())
            for job in live:
                try:
                    record = self._history.get_job(job.id)
                except Exception:
                    log.exception("follower: could not read job %s", job.id)
                    continue
                if record is None or record.status is JobStatus.PENDING:
                    continue
                if record.status is JobStatus.RUNNING:
                    if job.status is JobStatus.PENDING:
                        job.status = JobStatus.RUNNING
                        self._notify(job)
                    continue
                job.outputs = [_saved(self._outputs_dir, a) for a in record.assets if a.kind != "thumbnail"]
                with self._lock:
                    self._live.pop(job.id, None)
                job._finish(record.status, record.error)
                self._notify(job)

    def _handle(self, record: JobRecord) -> Job:
        """The live handle of a claimed job: the one `submit` returned, or (for a job left pending by a
        previous run of the studio) a new one from its recorded, already resolved parameters."""
        with self._lock:
            job = self._live.get(record.id)
        if job is None:
            try:
                spec = get_task(record.task).spec_type.parse(record.params)
            except StudioError as err:
                self._history.mark_failed(record.id, f"could not resume this job: {err}")
                return Job(id=record.id, task=record.task, spec=None, status=JobStatus.FAILED, error=str(err))
            job = Job(id=record.id, task=record.task, spec=spec, total_steps=int(getattr(spec, "steps", 0) or 0))
        with self._lock:
            self._live[job.id] = job
            self._running = job
        return job

    def _run(self, job: Job) -> None:
        assert job.spec is not None
        task = get_task(job.task)
        job.status = JobStatus.RUNNING
        job.started = time.monotonic()
        self._notify(job)
        written: list[SavedFile] = []  # the outputs, then the thumbnail
        try:
            card = self._cards.get(job.spec.model)
            family = FAMILIES.of(card)
            job.step_unit = family.step_unit if family is not None else "steps"

            def on_stage(stage: Stage, detail: str) -> None:
                job.stage, job.stage_detail = stage, detail
                self._notify(job)

            def on_step(step: int, total: int) -> None:
                if job._cancel.is_set():
                    raise Cancelled()  # stops the pipeline between two steps
                job.step, job.total_steps = step, total
                # After the last step a pipeline decodes its latents (or tokens) into the output.
                job.stage = Stage.DECODING if total and step >= total else Stage.STEPS
                self._notify(job)

            output = run_with_memory(self._scheduler, self._history, job, task, card, on_step, on_stage,
                                     self._loras, preview_every=self.preview_every)
            if job._cancel.is_set():
                raise Cancelled()
            on_stage(Stage.SAVING, "")
            ctx = JobContext(job_id=job.id, outputs_dir=self._outputs_dir, created_at=datetime.now(timezone.utc))
            saved = written = task.save(output, job.spec, card, ctx)
            written = [*saved, *self._thumbnail(job, saved, ctx)]
            for index, item in enumerate(written):
                self._history.add_asset(job.id, index=index, kind=item.kind, path=item.relpath, mime=item.mime,
                                        bytes=item.bytes, sha256=item.sha256, width=item.width, height=item.height,
                                        duration_s=item.duration_s)
        except Cancelled:
            self._discard(written)
            if self._stopping:  # stopped by the studio's own stop: its row is already marked interrupted
                job._finish(JobStatus.INTERRUPTED, "the studio stopped while this job ran")
                return
            self._history.mark_cancelled(job.id)
            job._finish(JobStatus.CANCELLED)
            return
        except Exception as err:
            self._fail(job, err, written)
            return
        self._history.mark_done(job.id)
        job.outputs = saved
        job.status = JobStatus.DONE

    def _thumbnail(self, job: Job, saved: list[SavedFile], ctx: JobContext) -> list[SavedFile]:
        """The gallery's thumbnail, made once now so the gallery never decodes full outputs. Without one
        the gallery shows the picture itself, so a failure here costs nothing but is logged."""
        source = thumbnail_source(saved)
        if source is None:
            return []
        try:
            return [save_thumbnail(source.path, self._outputs_dir, thumbnail_relpath(job.id, ctx.created_at))]
        except StudioError as err:
            log.warning("job %s: no thumbnail: %s", job.id, err)
            return []

    def _fail(self, job: Job, err: Exception, saved: list[SavedFile]) -> None:
        if isinstance(err, StudioError):
            reason = str(err)
        else:
            log.exception("job %s failed", job.id)
            reason = internal_reason(err)
        self._discard(saved)
        self._history.mark_failed(job.id, reason)
        job.error = reason
        job.status = JobStatus.FAILED

    @staticmethod
    def _discard(saved: list[SavedFile]) -> None:
        """A job that did not finish keeps no outputs: remove whatever part of its set was written."""
        for item in saved:
            item.path.unlink(missing_ok=True)
