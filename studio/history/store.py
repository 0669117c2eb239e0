"""HistoryStore: the one interface the app uses to record jobs and their outputs, and to read them.

Every method is its own short transaction on a fresh `Session`, so the worker thread and the UI
thread can call the same store at once; what comes back are frozen records, never ORM objects
bound to a session. Status changes follow the job's life and refuse impossible jumps:

    pending -> running -> done
    pending | running -> failed | cancelled;  running -> interrupted (the app stopped mid-job)

Claims with routing and leases (running -> pending again for a job whose worker died) are the
workers table's (workers.py). On PostgreSQL a status change locks its row first (FOR UPDATE), so two
processes never both change one job.

The gallery reads through `find_jobs`: filters, full-text search over prompts (on SQLite the
`jobs_fts` FTS5 table, keyed by each job's `seq` and written here in the same transaction as the job
row; on PostgreSQL a pg_trgm index on the prompt) and one page at a time, its rows and total from one
statement (search.page_query).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from ..errors import InvalidInput
from .bounds import INT64, MAX_ERROR, MAX_NAME, MAX_TEXT, clip, storable
from .db import is_postgres, is_query_error, make_engine, migrate, retry_when_locked, writer
from .records import AssetRecord, JobPage, JobRecord, asset_from_row, job_from_row, job_record
from .search import JobFilter, JobStatus, count_from_filter_index, page_query
from .tables import JOBS_FTS, Asset, Job, utcnow

log = logging.getLogger(__name__)

_CLOCK_SLACK = timedelta(minutes=10)  # how far back a clock step is smoothed over (see create_job)


def _check_relative_path(path: str) -> str:
    """Asset paths must stay inside the outputs dir, whatever machine the database moves to."""
    p = PurePosixPath(path)
    if "\\" in path or p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"asset path must be a POSIX path relative to the outputs dir: {path!r}")
    return p.as_posix()


class NotOwned(ValueError):
    """A worker tried to end a job that another worker runs now (the first was taken for dead meanwhile)."""


class HistoryStore:
    """Records jobs and their output files in the history database, and reads them back."""

    def __init__(self, database: Path | str) -> None:
        """`database`: the SQLite file, or a PostgreSQL URL (db.make_engine)."""
        self.engine = make_engine(database)
        self._fts = not is_postgres(self.engine)  # SQLite's jobs_fts; PostgreSQL's trigram index keeps itself
        # Opening the store always brings the schema to the newest revision.
        migrate(self.engine)
        self._writer = writer(self.engine)

    # -- writes -----------------------------------------------------------------------------

    def _write(self) -> Session:
        return Session(self._writer, expire_on_commit=False)

    @staticmethod
    def _job(s: Session, job_id: str, allowed: Iterable[JobStatus], action: str, worker: str | None = None) -> Job:
        # Locked until the transaction ends (PostgreSQL; SQLite's writer holds the whole file): a worker
        # that reaps a dead worker's job and a status change here never both win.
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            raise KeyError(f"no job with id {job_id!r} in the history")
        allowed = tuple(allowed)
        if JobStatus(job.status) not in allowed:
            wanted = " or ".join(a.value for a in allowed)
            raise ValueError(f"job {job_id} is {job.status}; it can only {action} when {wanted}")
        if worker is not None and job.worker is not None and job.worker != worker:
            # Its worker was taken for dead and the job re-queued and claimed elsewhere: not this one's to end.
            raise NotOwned(f"job {job_id} is run by another worker now ({job.worker})")
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
            # Never dated before the newest job when the clock stepped back a little (NTP): creation order, seq
            # order and created_at order stay one order, which lets search read its index newest first
            # (search.py). A clock that was far ahead (a dead RTC battery) and is set right is believed, or
            # every later job would carry that future date: search then lists them before the ones dated
            # ahead, the gallery after.
            newest = s.scalar(select(func.max(Job.created_at)))
            now = utcnow()
            job = Job(
                id=job_id,
                created_at=newest if newest is not None and now < newest <= now + _CLOCK_SLACK else now,
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
            s.flush()  # numbers the row: its seq is the FTS row's rowid
            if self._fts:
                s.execute(text(f"INSERT INTO {JOBS_FTS} (rowid, prompt) VALUES (:seq, :prompt)"),
                          {"seq": job.seq, "prompt": job.prompt})
        return job_id

    @retry_when_locked
    def claim_next(self) -> JobRecord | None:
        """Take the oldest pending job and mark it running, in one write transaction (so two workers
        never take the same job); None when nothing is pending. This is the persistent queue's pop."""
        with self._write() as s, s.begin():
            job = s.scalars(select(Job).where(Job.status == JobStatus.PENDING.value)
                            .order_by(Job.created_at, Job.seq).limit(1).with_for_update(skip_locked=True)).first()
            if job is None:
                return None
            job.status = JobStatus.RUNNING.value
            job.started_at = utcnow()
            s.flush()
            return job_record(job)

    def pending_jobs(self, limit: int = 500) -> list[JobRecord]:
        """The jobs waiting to run, first in line first (one query, for the Queue panel)."""
        query = (select(Job).options(selectinload(Job.assets)).where(Job.status == JobStatus.PENDING.value)
                 .order_by(Job.created_at, Job.seq).limit(limit))
        with Session(self.engine) as s, s.begin():
            return [job_record(j) for j in s.scalars(query)]

    def pending_ids(self) -> list[str]:
        """The ids of the jobs waiting to run, first in line first."""
        with Session(self.engine) as s, s.begin():
            return list(s.scalars(select(Job.id).where(Job.status == JobStatus.PENDING.value)
                                  .order_by(Job.created_at, Job.seq)))

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
        with self._write() as s, s.begin():
            self._job(s, job_id, [JobStatus.RUNNING, JobStatus.DONE], "get outputs")
            self._add_asset(s, job_id, dict(index=index, kind=kind, path=path, mime=mime, bytes=bytes, sha256=sha256,
                                            width=width, height=height, duration_s=duration_s))

    @staticmethod
    def _add_asset(s: Session, job_id: str, fields: Mapping[str, Any]) -> None:
        path = _check_relative_path(fields["path"])
        s.add(Asset(job_id=job_id, **{**fields, "path": path}, created_at=utcnow()))
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
    def mark_done(self, job_id: str, assets: Sequence[Mapping[str, Any]] = (), *, worker: str | None = None) -> None:
        """The running job finished: its output files' rows (`assets`: add_asset's fields, each) and status
        done, finished_at now, duration_s measured, in one transaction: the row never says done without
        its files, nor lists files of a job that is not done."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.RUNNING], "finish", worker)
            for fields in assets:
                self._add_asset(s, job_id, fields)
            self._finish(job, JobStatus.DONE)

    @retry_when_locked
    def mark_failed(self, job_id: str, error: str, *, worker: str | None = None) -> None:
        """The job failed (before or while running); `error` is kept for the user to read."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.PENDING, JobStatus.RUNNING], "fail", worker)
            self._finish(job, JobStatus.FAILED, clip(error, MAX_ERROR))

    @retry_when_locked
    def mark_cancelled(self, job_id: str, *, worker: str | None = None) -> None:
        """The user cancelled the job, queued or running."""
        with self._write() as s, s.begin():
            job = self._job(s, job_id, [JobStatus.PENDING, JobStatus.RUNNING], "be cancelled", worker)
            self._finish(job, JobStatus.CANCELLED)

    @retry_when_locked
    def cancel_pending(self, job_id: str) -> bool:
        """Cancel the job if it is still waiting in line; False if it is not (running, finished, unknown)."""
        with self._write() as s, s.begin():
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.status != JobStatus.PENDING.value:
                return False
            self._finish(job, JobStatus.CANCELLED)
            return True

    @retry_when_locked
    def interrupt_running(self, ids: Iterable[str] | None = None) -> list[str]:
        """Mark every job still 'running' (or those of `ids` that are) as interrupted; for start-up after
        a crash or kill, and a stop that gives up on a job.

        Returns the ids it changed. Pending jobs are left as they are (the queue decides).
        """
        with self._write() as s, s.begin():
            running = select(Job).where(Job.status == JobStatus.RUNNING.value)
            if ids is not None:
                running = running.where(Job.id.in_(list(ids)))
            jobs = s.scalars(running.with_for_update()).all()  # a row done meanwhile is left out
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
            record = job_record(job)
            s.delete(job)
            if self._fts:
                s.execute(text(f"DELETE FROM {JOBS_FTS} WHERE rowid = :seq"), {"seq": job.seq})
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
            return None if job is None else job_record(job)

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

        One statement reads the page's rows and the total (search.page_query), a second the page's
        assets; only a page past the end counts on its own. The (filter column, created_at) indexes and
        the seq-keyed FTS index keep each a short walk however long the history is (bench/gallery.py)."""
        limit, offset = max(0, min(limit, 10_000)), max(0, min(offset, 2**62))  # SQLite integers are 64-bit
        try:
            # Plain rows, not ORM objects; one read transaction, so the page and its assets agree.
            with self.engine.connect() as conn, conn.begin():
                page, count = page_query(filters, limit, offset, common=count_from_filter_index(conn, filters),
                                         dialect=conn.dialect.name)
                rows = conn.execute(page).mappings().all()
                assets: dict[str, list[AssetRecord]] = {row["id"]: [] for row in rows}
                if rows:
                    total = rows[0]["total"]
                    owned = select(Asset.__table__).where(Asset.job_id.in_(list(assets)))
                    for asset in conn.execute(owned.order_by(Asset.job_id, Asset.index)).mappings():
                        assets[asset["job_id"]].append(asset_from_row(asset))
                else:  # past the end, or an empty page asked for: no row carries the total
                    total = conn.execute(count).scalar_one() if offset or not limit else 0
        except DBAPIError as err:
            if not is_query_error(err):
                raise
            # Whatever the search text was, it is the user's to fix; say so rather than fail.
            raise InvalidInput(f"this search could not be run ({err.orig}); try simpler words") from None
        jobs = [job_from_row(row, tuple(assets[row["id"]])) for row in rows]
        return JobPage(jobs=jobs, total=total, offset=offset, limit=limit, filters=filters)

    def close(self) -> None:
        """Close every pooled connection (the store is not usable afterwards)."""
        self.engine.dispose()
