"""HistoryStore: the one interface the app uses to record jobs and their outputs, and to read them.

Every method is its own short transaction on a fresh `Session`, so the worker thread and the UI
thread can call the same store at once; what comes back are frozen records, never ORM objects
bound to a session. Status changes follow the job's life and refuse impossible jumps:

    pending -> running -> done
    pending | running -> failed | cancelled;  running -> interrupted (the app stopped mid-job)

The gallery reads through `find_jobs`: filters, full-text search over prompts (the `jobs_fts`
FTS5 table, written here in the same transaction as the job row) and one page at a time.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, literal_column, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from ..errors import InvalidInput
from .bounds import INT64, MAX_ERROR, MAX_NAME, MAX_TEXT, clip, storable
from .db import make_engine, migrate, retry_when_locked, writer
from .search import JobFilter, JobStatus, filter_conditions
from .tables import JOBS_FTS, Asset, Job, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetRecord:
    """One output file of a job; `path` is POSIX and relative to the outputs dir."""

    id: int
    job_id: str
    index: int
    kind: str
    path: str
    mime: str
    width: int | None
    height: int | None
    duration_s: float | None
    bytes: int
    sha256: str
    created_at: datetime


@dataclass(frozen=True)
class JobRecord:
    """A job as the history holds it, with its assets in output order. Timestamps are UTC."""

    id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    status: JobStatus
    task: str
    model_id: str
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    seed: int | None
    error: str | None
    duration_s: float | None
    assets: tuple[AssetRecord, ...]
    placement: str | None = None
    favorite: bool = False


@dataclass(frozen=True)
class JobPage:
    """One page of a filtered history, newest first, and how many jobs the filter matches in all."""

    jobs: list[JobRecord]
    total: int
    offset: int
    limit: int
    filters: JobFilter = field(default_factory=JobFilter)


def _asset_record(a: Asset) -> AssetRecord:
    return AssetRecord(
        id=a.id,
        job_id=a.job_id,
        index=a.index,
        kind=a.kind,
        path=a.path,
        mime=a.mime,
        width=a.width,
        height=a.height,
        duration_s=a.duration_s,
        bytes=a.bytes,
        sha256=a.sha256,
        created_at=a.created_at,
    )


def _job_record(j: Job) -> JobRecord:
    return JobRecord(
        id=j.id,
        created_at=j.created_at,
        started_at=j.started_at,
        finished_at=j.finished_at,
        status=JobStatus(j.status),
        task=j.task,
        model_id=j.model_id,
        prompt=j.prompt,
        negative_prompt=j.negative_prompt,
        params=dict(j.params or {}),
        seed=j.seed,
        error=j.error,
        duration_s=j.duration_s,
        assets=tuple(_asset_record(a) for a in sorted(j.assets, key=lambda a: a.index)),
        placement=j.placement,
        favorite=bool(j.favorite),
    )


def _check_relative_path(path: str) -> str:
    """Asset paths must stay inside the outputs dir, whatever machine the database moves to."""
    p = PurePosixPath(path)
    if "\\" in path or p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"asset path must be a POSIX path relative to the outputs dir: {path!r}")
    return p.as_posix()


class HistoryStore:
    """Records jobs and their output files in the history database, and reads them back."""

    def __init__(self, db_path: Path) -> None:
        self.engine = make_engine(Path(db_path))
        # Opening the store always brings the schema to the newest revision.
        migrate(self.engine)
        self._writer = writer(self.engine)

    # -- writes -----------------------------------------------------------------------------

    def _write(self) -> Session:
        return Session(self._writer, expire_on_commit=False)

    @staticmethod
    def _job(s: Session, job_id: str, allowed: Iterable[JobStatus], action: str) -> Job:
        job = s.get(Job, job_id)
        if job is None:
            raise KeyError(f"no job with id {job_id!r} in the history")
        allowed = tuple(allowed)
        if JobStatus(job.status) not in allowed:
            wanted = " or ".join(a.value for a in allowed)
            raise ValueError(f"job {job_id} is {job.status}; it can only {action} when {wanted}")
        return job

    @retry_when_locked
    def create_job(
        self,
        *,
        task: str,
        model_id: str,
        prompt: str,
        negative_prompt: str = "",
        params: dict[str, Any],
        seed: int | None,
        job_id: str | None = None,
        refused: str | None = None,
    ) -> str:
        """Record a new pending job and return its id (`job_id`, or a new uuid4 hex string).

        With `refused` (the reason) the row is written already failed, in the same transaction: a
        request refused before it could queue must never be seen pending, or a worker could claim it."""
        job_id = job_id or uuid.uuid4().hex
        with self._write() as s, s.begin():
            job = Job(
                id=job_id,
                created_at=utcnow(),
                status=JobStatus.PENDING.value,
                task=clip(task, MAX_NAME),
                model_id=clip(model_id, MAX_NAME),
                prompt=clip(prompt, MAX_TEXT),
                negative_prompt=clip(negative_prompt, MAX_TEXT),
                params=storable(params),
                seed=seed if isinstance(seed, int) and -INT64 <= seed < INT64 else None,
            )
            if refused is not None:
                self._finish(job, JobStatus.FAILED, clip(refused, MAX_ERROR))
            s.add(job)
            s.execute(text(f"INSERT INTO {JOBS_FTS} (job_id, prompt) VALUES (:id, :prompt)"),
                      {"id": job_id, "prompt": clip(prompt, MAX_TEXT)})
        return job_id

    @retry_when_locked
    def claim_next(self) -> JobRecord | None:
        """Take the oldest pending job and mark it running, in one write transaction (so two workers
        never take the same job); None when nothing is pending. This is the persistent queue's pop."""
        with self._write() as s, s.begin():
            job = s.scalars(select(Job).where(Job.status == JobStatus.PENDING.value)
                            .order_by(Job.created_at, literal_column("jobs.rowid")).limit(1)).first()
            if job is None:
                return None
            job.status = JobStatus.RUNNING.value
            job.started_at = utcnow()
            s.flush()
            return _job_record(job)

    def pending_jobs(self, limit: int = 500) -> list[JobRecord]:
        """The jobs waiting to run, first in line first (one query, for the Queue panel)."""
        query = (select(Job).options(selectinload(Job.assets)).where(Job.status == JobStatus.PENDING.value)
                 .order_by(Job.created_at, literal_column("jobs.rowid")).limit(limit))
        with Session(self.engine) as s, s.begin():
            return [_job_record(j) for j in s.scalars(query)]

    def pending_ids(self) -> list[str]:
        """The ids of the jobs waiting to run, first in line first."""
        with Session(self.engine) as s, s.begin():
            return list(s.scalars(select(Job.id).where(Job.status == JobStatus.PENDING.value)
                                  .order_by(Job.created_at, literal_column("jobs.rowid"))))

    def recent_durations(self, task: str, model_id: str, limit: int = 20) -> list[float]:
        """How long the last `limit` finished jobs of this task and model ran, newest first (for ETAs)."""
        query = (select(Job.duration_s).where(Job.task == task, Job.model_id == model_id,
                                              Job.status == JobStatus.DONE.value, Job.duration_s.is_not(None))
                 .order_by(Job.created_at.desc()).limit(limit))
        with Session(self.engine) as s, s.begin():
            return [float(d) for d in s.scalars(query)]

    @retry_when_locked
    def mark_running(self, job_id: str) -> None:
        """A worker picked the job up: status running, started_at now."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.PENDING], "start")
            job.status = JobStatus.RUNNING.value
            job.started_at = utcnow()

    @retry_when_locked
    def add_asset(
        self,
        job_id: str,
        *,
        index: int,
        kind: str,
        path: str,
        mime: str,
        bytes: int,
        sha256: str,
        width: int | None = None,
        height: int | None = None,
        duration_s: float | None = None,
    ) -> None:
        """Record an output file of a running (or just finished) job. Paths are unique."""
        path = _check_relative_path(path)
        with self._write() as s, s.begin():
            self._job(s, job_id, [JobStatus.RUNNING, JobStatus.DONE], "get outputs")
            s.add(
                Asset(
                    job_id=job_id,
                    index=index,
                    kind=kind,
                    path=path,
                    mime=mime,
                    width=width,
                    height=height,
                    duration_s=duration_s,
                    bytes=bytes,
                    sha256=sha256,
                    created_at=utcnow(),
                )
            )
            try:
                s.flush()
            except IntegrityError as err:
                raise ValueError(f"an asset with path {path!r} is already recorded") from err

    def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        job.status = status.value
        job.finished_at = utcnow()
        job.error = error
        if job.started_at is not None:
            # Wall clocks can step backwards (NTP); a negative duration would only confuse.
            job.duration_s = max(0.0, (job.finished_at - job.started_at).total_seconds())

    @retry_when_locked
    def set_placement(self, job_id: str, placement: str) -> None:
        """The placement the job's model ran under (recorded once it is known, after any retry)."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.RUNNING], "record a placement")
            job.placement = placement

    @retry_when_locked
    def mark_done(self, job_id: str) -> None:
        """The running job finished: status done, finished_at now, duration_s measured."""
        with self._write() as s, s.begin():
            self._finish(self._job(s, job_id, [JobStatus.RUNNING], "finish"), JobStatus.DONE)

    @retry_when_locked
    def mark_failed(self, job_id: str, error: str) -> None:
        """The job failed (before or while running); `error` is kept for the user to read."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.PENDING, JobStatus.RUNNING], "fail")
            self._finish(job, JobStatus.FAILED, clip(error, MAX_ERROR))

    @retry_when_locked
    def mark_cancelled(self, job_id: str) -> None:
        """The user cancelled the job, queued or running."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.PENDING, JobStatus.RUNNING], "be cancelled")
            self._finish(job, JobStatus.CANCELLED)

    @retry_when_locked
    def cancel_pending(self, job_id: str) -> bool:
        """Cancel the job if it is still waiting in line; False if it is not (running, finished, unknown)."""
        with self._write() as s, s.begin():
            job = s.get(Job, job_id)
            if job is None or job.status != JobStatus.PENDING.value:
                return False
            self._finish(job, JobStatus.CANCELLED)
            return True

    @retry_when_locked
    def interrupt_running(self) -> list[str]:
        """Mark every job still 'running' as interrupted; for start-up after a crash or kill.

        Returns the ids it changed. Pending jobs are left as they are (the queue decides).
        """
        with self._write() as s, s.begin():
            jobs = s.scalars(select(Job).where(Job.status == JobStatus.RUNNING.value)).all()
            for job in jobs:
                self._finish(job, JobStatus.INTERRUPTED, "the studio stopped while this job ran")
            return [job.id for job in jobs]

    @retry_when_locked
    def delete_job(self, job_id: str) -> JobRecord:
        """Remove a job and its asset rows; returns what was removed so the caller can delete files."""
        with self._write() as s, s.begin():
            job = s.get(Job, job_id, options=[selectinload(Job.assets)])
            if job is None:
                raise KeyError(f"no job with id {job_id!r} in the history")
            record = _job_record(job)
            s.delete(job)
            s.execute(text(f"DELETE FROM {JOBS_FTS} WHERE job_id = :id"), {"id": job_id})
        return record

    @retry_when_locked
    def set_favorite(self, job_id: str, favorite: bool) -> None:
        """Star or unstar a job (any status)."""
        with self._write() as s, s.begin():
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(f"no job with id {job_id!r} in the history")
            job.favorite = bool(favorite)

    # -- reads ------------------------------------------------------------------------------

    def asset_paths(self) -> set[str]:
        """Every output file a job row owns (relative to the outputs folder)."""
        with Session(self.engine) as s:
            return set(s.scalars(select(Asset.path)))

    def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id and its assets (ordered by index), or None."""
        with Session(self.engine) as s, s.begin():
            job = s.get(Job, job_id, options=[selectinload(Job.assets)])
            return None if job is None else _job_record(job)

    def list_jobs(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        task: str | None = None,
        status: JobStatus | str | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first, optionally only one task kind and/or one status."""
        return self.find_jobs(JobFilter(task=task, status=status), limit=limit, offset=offset).jobs

    def find_jobs(self, filters: JobFilter = JobFilter(), *, limit: int = 48, offset: int = 0) -> JobPage:
        """One page of the jobs that match `filters`, newest first, with the total count.

        Only the page's rows (and their assets) are loaded; the (filter column, created_at) indexes
        keep this a short index walk however long the history is (bench/gallery.py measures it)."""
        limit, offset = max(0, min(limit, 10_000)), max(0, min(offset, 2**62))  # SQLite integers are 64-bit
        conditions = filter_conditions(filters)
        # rowid breaks ties between jobs created within the same microsecond.
        page = (select(Job).options(selectinload(Job.assets)).where(*conditions)
                .order_by(Job.created_at.desc(), literal_column("jobs.rowid").desc()).limit(limit).offset(offset))
        count = select(func.count()).select_from(Job).where(*conditions)
        try:
            with Session(self.engine) as s, s.begin():
                jobs = [_job_record(j) for j in s.scalars(page)]
                total = s.scalar(count) or 0
        except OperationalError as err:
            if "locked" in str(err) or "busy" in str(err):
                raise
            # Whatever the search text was, it is the user's to fix; say so rather than fail.
            raise InvalidInput(f"this search could not be run ({err.orig}); try simpler words") from None
        return JobPage(jobs=jobs, total=total, offset=offset, limit=limit, filters=filters)

    def close(self) -> None:
        """Close every pooled connection (the store is not usable afterwards)."""
        self.engine.dispose()
