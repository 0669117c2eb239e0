"""The job queue: every generation, from any front end, is submitted here and run by one worker.

submit(task, params) validates the parameters into a TaskSpec resolved against its model card and
records the job (pending). A worker thread per device takes jobs in order, acquires the pipeline
from the MemoryScheduler, runs the task with per-step progress, saves the outputs, and records the
job done with its assets, or failed with a reason. Bad input never reaches the worker: the job row
is recorded failed with the message straight away. Nothing a job does can kill the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .errors import StudioError

from .history import HistoryStore, JobStatus
from .media import SavedFile, save_thumbnail, thumbnail_relpath, thumbnail_source
from .runtime.memory import MemoryScheduler
from .tasks import get_task
from .tasks.base import JobContext, TaskSpec
from .zoo.cards import CardRegistry

log = logging.getLogger(__name__)

ProgressListener = Callable[["Job"], None]


class OutOfMemory(StudioError):
    """The job did not fit the device even with the most frugal placement the scheduler tried."""


@dataclass
class Job:
    """A handle on one submitted job: its live status, progress and result."""

    id: str
    task: str
    spec: TaskSpec | None
    status: JobStatus = JobStatus.PENDING
    step: int = 0
    total_steps: int = 0
    outputs: list[SavedFile] = field(default_factory=list)
    error: str | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has finished (done or failed); False on timeout."""
        return self._done.wait(timeout)


_STOP = object()


class JobQueue:
    def __init__(self, cards: CardRegistry, history: HistoryStore, scheduler: MemoryScheduler,
                 outputs_dir: Path) -> None:
        self._cards = cards
        self._history = history
        self._scheduler = scheduler
        self._outputs_dir = outputs_dir
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._listeners: list[ProgressListener] = []

    # -- front-end side -------------------------------------------------------------------------

    def submit(self, task_name: str, params: Mapping[str, Any]) -> Job:
        """Validate and enqueue a job. Invalid input gives a job that is already failed, with the reason."""
        try:
            task = get_task(task_name)
            spec = task.spec_type.parse(params).resolved(self._cards.get(str(params.get("model", ""))))
        except StudioError as err:
            return self._record_rejected(task_name, params, str(err))
        job_id = self._history.create_job(
            task=task.name,
            model_id=spec.model,
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            params=spec.model_dump(mode="json"),
            seed=spec.seed,
        )
        job = Job(id=job_id, task=task.name, spec=spec, total_steps=int(getattr(spec, "steps", 0) or 0))
        self._queue.put(job)
        return job

    def _record_rejected(self, task_name: str, params: Mapping[str, Any], reason: str) -> Job:
        raw = {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in params.items()}
        job_id = self._history.create_job(
            task=str(task_name)[:32],
            model_id=str(params.get("model", ""))[:128],
            prompt=str(params.get("prompt", "")),
            negative_prompt=str(params.get("negative_prompt", "")),
            params=raw,
            seed=None,
        )
        self._history.mark_failed(job_id, reason)
        job = Job(id=job_id, task=str(task_name), spec=None, status=JobStatus.FAILED, error=reason)
        job._done.set()
        return job

    def add_listener(self, listener: ProgressListener) -> None:
        """Called (from the worker thread) whenever a job changes status or makes progress."""
        self._listeners.append(listener)

    # -- worker side -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
            self._worker.start()

    def stop(self, timeout: float | None = 30) -> None:
        if self._worker is not None and self._worker.is_alive():
            self._queue.put(_STOP)
            self._worker.join(timeout)

    def _notify(self, job: Job) -> None:
        for listener in self._listeners:
            try:
                listener(job)
            except Exception:  # a broken listener must not fail the job
                log.exception("job listener failed")

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            try:
                self._run(job)
            except Exception:  # belt and braces: _run records its own failures
                log.exception("worker: unexpected error around job %s", job.id)
            finally:
                job._done.set()
                self._notify(job)

    def _run(self, job: Job) -> None:
        assert job.spec is not None
        task = get_task(job.task)
        self._history.mark_running(job.id)
        job.status = JobStatus.RUNNING
        self._notify(job)
        written: list[SavedFile] = []  # the outputs, then the thumbnail
        try:
            card = self._cards.get(job.spec.model)

            def on_step(step: int, total: int) -> None:
                job.step, job.total_steps = step, total
                self._notify(job)

            output = self._run_with_memory(job, task, card, on_step)
            ctx = JobContext(job_id=job.id, outputs_dir=self._outputs_dir, created_at=datetime.now(timezone.utc))
            saved = written = task.save(output, job.spec, card, ctx)
            source = thumbnail_source(saved)
            if source is not None:  # made once, now, so the gallery never decodes full outputs
                thumbnail = save_thumbnail(source.path, self._outputs_dir, thumbnail_relpath(job.id, ctx.created_at))
                written = [*saved, thumbnail]
            for index, item in enumerate(written):
                self._history.add_asset(job.id, index=index, kind=item.kind, path=item.relpath, mime=item.mime,
                                        bytes=item.bytes, sha256=item.sha256, width=item.width, height=item.height,
                                        duration_s=item.duration_s)
        except Exception as err:
            self._fail(job, err, written)
            return
        self._history.mark_done(job.id)
        job.outputs = saved
        job.status = JobStatus.DONE

    def _run_with_memory(self, job: Job, task: Any, card: Any, on_step: Callable[[int, int], None]) -> Any:
        """Run the task on its pipeline; on out-of-memory, free everything else and retry once with
        the next more frugal placement. The placement that ran is recorded on the job."""
        spec = job.spec
        working = task.working_bytes(spec, card)
        with self._scheduler.acquire(card, working) as lease:
            try:
                output = task.run(lease.pipeline, spec, card, on_step)
                placement = lease.placement
            except torch.OutOfMemoryError:
                log.warning("job %s: out of memory with %s", job.id, lease.placement.value)
                retry = self._scheduler.step_down(card, working)
                if retry is None:
                    raise OutOfMemory(self._oom_message(card, spec, lease.placement, working)) from None
                try:
                    output = task.run(retry.pipeline, spec, card, on_step)
                except torch.OutOfMemoryError:
                    raise OutOfMemory(self._oom_message(card, spec, retry.placement, working)) from None
                placement = retry.placement
        self._history.set_placement(job.id, placement.value)
        output.used["placement"] = placement.value
        return output

    def _oom_message(self, card: Any, spec: Any, placement: Any, working: int) -> str:
        need = self._scheduler.need_bytes(card, placement, working)
        budget = self._scheduler.device_budget()
        size = f" at {spec.width}x{spec.height}" if getattr(spec, "width", None) else ""
        have = f"; {budget / 2**30:.1f} GB were available" if budget else ""
        return (f"Out of memory: {card.title}{size} needs about {need / 2**30:.1f} GB on {self._scheduler.device} "
                f"even with {placement.value}{have}. Try a smaller size or fewer images, or close other programs "
                "using the GPU.")

    def _fail(self, job: Job, err: Exception, saved: list[SavedFile]) -> None:
        if isinstance(err, StudioError):
            reason = str(err)
        else:
            log.exception("job %s failed", job.id)
            reason = f"Internal error: {type(err).__name__}: {err}"
        # A failed job keeps no outputs: remove whatever part of its set was already written.
        for item in saved:
            item.path.unlink(missing_ok=True)
        self._history.mark_failed(job.id, reason)
        job.error = reason
        job.status = JobStatus.FAILED
