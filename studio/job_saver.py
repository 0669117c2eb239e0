"""Saving finished jobs off the sampling thread: the worker hands each job's output to one saver
thread and starts the next job's sampling while the files are written.

The saver writes a job's files (PNG encode, metadata, fsyncs), its thumbnail (from the picture in
memory, never by decoding the file just written), its asset rows, and only then marks the row done
and finishes the handle (its done event, then the listeners). So row and files agree as before: no
partial file under its final name (media writes atomically), no row `done` without its files (a
crash mid-save leaves the row `running`, which the next start marks interrupted, and the orphaned
files are swept), and a failed save marks the job failed with its files removed. Jobs are saved in
the order they finished sampling. The hand-off holds at most `waiting` outputs besides the one
being saved (each holds its pictures in RAM): past that the worker waits, and the time it waits is
counted in `blocked_s`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from .errors import StudioError, internal_reason
from .history import HistoryStore, JobStatus
from .history.store import NotOwned
from .job import Job
from .media import SavedFile, save_thumbnail, thumbnail_relpath, thumbnail_source
from .tasks.base import JobContext, TaskOutput

log = logging.getLogger(__name__)

_INTERRUPTED = "the studio stopped while this job ran"
_TAKEN_OVER = "this worker was taken for dead while the job ran; another worker runs it now"


@dataclass(frozen=True)
class FinishedRun:
    """A job whose sampling is over, with what the saver needs to write and record it."""

    job: Job
    task: Any
    card: Any
    output: TaskOutput
    created_at: datetime


class Saver:
    def __init__(self, history: HistoryStore, outputs_dir: Path, settle: Callable[[Job], None],
                 unrecorded: Callable[[str, str], None], waiting: int = 1, worker: str | None = None) -> None:
        self._history = history
        self._worker = worker  # the worker whose jobs it saves: a job another worker took over is not ended here
        self._outputs_dir = outputs_dir
        self._settle = settle  # the queue's end of a job: the handle leaves the live set, done, listeners
        self._unrecorded = unrecorded  # (job id, reason): a failure the database would not take yet
        self._queue: queue.Queue[FinishedRun | None] = queue.Queue(maxsize=max(1, waiting))
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._saving: list[Job] = []  # handed over and not yet finished, oldest first
        self.blocked_s = 0.0  # how long the worker has waited for room in the hand-off, in all

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="studio-saver", daemon=True)
            self._thread.start()

    def hand_over(self, run: FinishedRun) -> None:
        """Queue a finished job for saving; waits while `waiting` saves are already queued."""
        with self._lock:
            self._saving.append(run.job)
        started = time.perf_counter()
        self._queue.put(run)
        self.blocked_s += time.perf_counter() - started

    def saving(self) -> list[Job]:
        """The jobs handed over whose files are not all written and recorded yet, oldest first."""
        with self._lock:
            return list(self._saving)

    def close(self, timeout: float | None = None) -> bool:
        """Finish the queued saves, then stop the thread; False if that took longer than `timeout`."""
        if self._thread is None or not self._thread.is_alive():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return False
        # A worker that was stuck in a hand-off may have queued a job behind the end: nothing writes it now.
        while True:
            try:
                run = self._queue.get_nowait()
            except queue.Empty:
                return True
            if run is not None:
                run.job._finish(JobStatus.INTERRUPTED, _INTERRUPTED)
                with self._lock:
                    self._saving = [other for other in self._saving if other is not run.job]
                self._settle(run.job)

    def _loop(self) -> None:
        while (run := self._queue.get()) is not None:
            job = run.job
            try:
                self._save(run)
            except Exception as err:  # _save records its own failures; this is when recording itself failed
                log.exception("saver: unexpected error around job %s", job.id)
                job.error = job.error or internal_reason(err)
                job.status = JobStatus.FAILED
                self._unrecorded(job.id, f"The job's result could not be recorded: {internal_reason(err)}")
            finally:
                job.outputs = [dataclasses.replace(item, picture=None) for item in job.outputs]
                with self._lock:  # by identity: two handles of one job compare equal
                    self._saving = [other for other in self._saving if other is not job]
                self._settle(job)
            run = job = None  # while it waits for the next job, this one's pictures are not kept alive

    def _save(self, run: FinishedRun) -> None:
        job, task = run.job, run.task
        assert job.spec is not None
        if job._cancel.is_set():  # cancelled while it waited for the saver: nothing is written
            try:
                self._history.mark_cancelled(job.id, worker=self._worker)
            except NotOwned:
                job._finish(JobStatus.INTERRUPTED, _TAKEN_OVER)
                return
            job._finish(JobStatus.CANCELLED)
            return
        ctx = JobContext(job_id=job.id, outputs_dir=self._outputs_dir, created_at=run.created_at)
        written: list[SavedFile] = []  # the outputs, then the thumbnail
        try:
            saved = written = task.save(run.output, job.spec, run.card, ctx)
            written = [*saved, *self._thumbnail(job, saved, ctx)]
            self._history.mark_done(job.id, worker=self._worker, assets=[
                dict(index=index, kind=item.kind, path=item.relpath, mime=item.mime, bytes=item.bytes,
                     sha256=item.sha256, width=item.width, height=item.height, duration_s=item.duration_s)
                for index, item in enumerate(written)])
        except Exception as err:
            self._fail(job, err, written)
            return
        job.outputs = list(saved)
        job.status = JobStatus.DONE

    def _thumbnail(self, job: Job, saved: list[SavedFile], ctx: JobContext) -> list[SavedFile]:
        """The gallery's thumbnail, made once now so the gallery never decodes full outputs. Without one
        the gallery shows the picture itself, so a failure here costs nothing but is logged."""
        source = thumbnail_source(saved)
        if source is None:
            return []
        try:
            picture = source.picture if source.picture is not None else source.path
            return [save_thumbnail(picture, self._outputs_dir, thumbnail_relpath(job.id, ctx.created_at))]
        except StudioError as err:
            log.warning("job %s: no thumbnail: %s", job.id, err)
            return []

    def _fail(self, job: Job, err: Exception, written: list[SavedFile]) -> None:
        """A job that did not finish keeps no outputs: remove whatever part of its set was written."""
        if isinstance(err, NotOwned):
            # Another worker runs it now and writes the same files (same job, same seed): leave them to it.
            job._finish(JobStatus.INTERRUPTED, _TAKEN_OVER)
            return
        for item in written:
            item.path.unlink(missing_ok=True)
        if isinstance(err, StudioError):
            reason = str(err)
        else:
            record = self._history.get_job(job.id)
            if record is not None and record.status is JobStatus.INTERRUPTED:  # a stop gave up waiting on it
                job._finish(JobStatus.INTERRUPTED, _INTERRUPTED)
                return
            log.exception("job %s failed while saving", job.id)
            reason = internal_reason(err)
        self._history.mark_failed(job.id, reason, worker=self._worker)
        job.error = reason
        job.status = JobStatus.FAILED
