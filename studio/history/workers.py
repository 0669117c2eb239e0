"""The workers of one queue, on any number of hosts, as the shared database knows them.

Every worker (a device of a `studio serve` or `studio worker` process) has a row in `workers` that it
refreshes every few seconds (its heartbeat, with the job it runs, how far it got, the models it holds
and how full its device is). From these rows:

- **claims** route jobs: a worker takes the oldest pending job whose model it holds, else the oldest one
  no better-suited idle worker should take (one holding its model, or one less loaded), and after
  `AFFINITY_WAIT_S` any job: a deferral never starves a job. On PostgreSQL the candidates are read
  `FOR UPDATE SKIP LOCKED`, so workers claiming at once never wait on each other nor take the same job;
  on SQLite the claim is one BEGIN IMMEDIATE transaction.
- **leases** end the jobs of dead workers: a row whose heartbeat is older than the lease, or whose
  process is gone from this very host (same host id, the pid no longer that process: seen at once,
  without waiting for the lease), is dead; its running job is marked interrupted, or put back in line
  when that worker's own setting said so (at most `MAX_ATTEMPTS` runs of one job), and the row removed. Every process
  reaps, so a job never waits for its dead worker's own host to come back.
- **cancel and pause reach every host**: a cancel from a process that does not run the job sets the
  row's `cancel_requested`, which its worker reads at its next heartbeat; `queue_state.paused` is read
  at every claim.

Times come from the database's clock (PostgreSQL's `now()`; on SQLite, which is a local file, this
machine's), so hosts whose clocks disagree still agree on who is late.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import retry_when_locked, writer
from .records import JobRecord, job_record
from .search import JobStatus
from .tables import Job, QueueState, Worker, utcnow

log = logging.getLogger(__name__)

LEASE_S = 15.0  # a worker silent this long is dead (Settings.lease_s); its heartbeat is a fifth of this
AFFINITY_WAIT_S = 2.0  # how long a job may wait for the idle worker that holds its model (or is less loaded)
MAX_ATTEMPTS = 2  # runs of one job when lost jobs are re-queued: a job that kills its worker is not retried forever
_LOOK_AHEAD = 32  # pending jobs a claim considers, oldest first
LOST_REASON = "the studio stopped while this job ran (its worker {worker} ended or stopped answering)"


@lru_cache(maxsize=1)
def machine_id() -> str:
    """This host's process table: hostname, boot id and pid namespace. Two rows with the same value see
    the same pids, so a pid can be checked; a reboot, another machine or another container (even one
    sharing the host's network and kernel) gives another value."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:36]
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return f"{socket.gethostname()}/{uuid.uuid4().hex}"  # cannot tell: this process alone, pids unchecked
    return f"{socket.gethostname()[:16]}/{boot}/{namespace}"[:64]


_GONE = "gone"


def _process_started(pid: int) -> float | str | None:
    """When process `pid` started (tells a reused pid from the process that registered); `_GONE` when there
    is no such process; None when it cannot be told (not ours to inspect): then it counts as alive."""
    import psutil

    try:
        return round(psutil.Process(pid).create_time(), 2)
    except psutil.NoSuchProcess:
        return _GONE
    except Exception:
        return None


@dataclass(frozen=True)
class WorkerState:
    """What one worker reports at each heartbeat."""

    worker_id: str
    job_id: str | None = None
    step: int = 0
    total_steps: int = 0
    models: tuple[str, ...] = ()
    load: float = 0.0
    available: tuple[str, ...] | None = None  # the models ready on this host, when looked at again (else None)


@dataclass(frozen=True)
class Beat:
    """What the database tells the heartbeat: jobs to stop, workers it had lost, whether the queue is paused."""

    cancel: frozenset[str] = frozenset()  # running job ids whose cancel was asked for from elsewhere
    lost: frozenset[str] = frozenset()  # worker ids whose row was gone (reaped as dead): re-registered
    paused: bool = False


@dataclass(frozen=True)
class Claim:
    """A claim's outcome: the job to run, or none and how soon to look again (a job was left for a peer)."""

    job: JobRecord | None = None
    retry_s: float | None = None


@dataclass(frozen=True)
class LiveWorker:
    """A worker row whose heartbeat is within the lease (the Queue panel's and the ETAs' view)."""

    id: str
    host: str
    device: str
    job_id: str | None
    step: int
    total_steps: int
    models: tuple[str, ...] = field(default=())


def _values(state: WorkerState, now: datetime, *, idle: bool = True) -> dict:
    """A state's columns. A heartbeat (`idle=False`) writes the job only when it has one: a beat read before
    a claim must not undo the claim's job id (the job's end is written by `report`)."""
    values = dict(heartbeat_at=now, models=list(state.models), load=state.load)
    if idle or state.job_id is not None:
        values.update(job_id=state.job_id, step=state.step, total_steps=state.total_steps)
    if state.available is not None:
        values["available"] = list(state.available)
    return values


class WorkerBook:
    """The workers table and the queue-wide switches: registration, heartbeats, routing claims, leases."""

    def __init__(self, engine: Engine, lease_s: float = LEASE_S, *, requeue_lost: bool = False,
                 host_id: str = "") -> None:
        self.engine = engine
        # Settings.host_id when containers share a hostname and kernel but not their process tables.
        self.host_id = (host_id or machine_id())[:64]
        self._writer = writer(engine)
        self.lease_s = float(lease_s)
        self.requeue_lost = requeue_lost
        self._postgres = engine.dialect.name == "postgresql"

    @property
    def beat_s(self) -> float:
        """How often a worker reports: several beats fit in one lease, so one late beat is not death."""
        return max(0.05, self.lease_s / 5)

    def _now(self, s: Session) -> datetime:
        return s.scalar(select(func.now())) if self._postgres else utcnow()

    # -- this process's workers -------------------------------------------------------------------

    @retry_when_locked
    def register(self, worker_id: str, device: str, available: Iterable[str] | None = None) -> None:
        """Add (or renew) this process's worker row (`available`: the models whose files are on this host)."""
        with Session(self._writer) as s, s.begin():
            now = self._now(s)
            row = s.get(Worker, worker_id) or Worker(id=worker_id)
            row.host, row.host_id, row.pid = socket.gethostname()[:200], self.host_id, os.getpid()
            row.pid_started, row.device = _process_started(os.getpid()), device[:64]
            row.started_at, row.heartbeat_at, row.job_id, row.models, row.load = now, now, None, [], 0.0
            row.available = None if available is None else sorted(available)
            row.requeue_lost = self.requeue_lost
            s.merge(row)

    @retry_when_locked
    def unregister(self, worker_ids: Iterable[str]) -> None:
        with Session(self._writer) as s, s.begin():
            s.execute(delete(Worker).where(Worker.id.in_(list(worker_ids))))

    @retry_when_locked
    def beat(self, states: Sequence[WorkerState], devices: dict[str, str]) -> Beat:
        """Refresh this process's rows (one transaction), and read what the others asked of them."""
        lost: set[str] = set()
        with Session(self._writer) as s, s.begin():
            now = self._now(s)
            for st in states:
                done = s.execute(update(Worker).where(Worker.id == st.worker_id).values(_values(st, now, idle=False)))
                if done.rowcount == 0:  # reaped while this process could not reach the database
                    lost.add(st.worker_id)
            running = [st.job_id for st in states if st.job_id]
            cancel = set(s.scalars(select(Job.id).where(Job.id.in_(running), Job.cancel_requested.is_(True)))) \
                if running else set()
            paused = bool(s.scalar(select(QueueState.value).where(QueueState.name == "paused")))
        for worker_id in lost:
            self.register(worker_id, devices.get(worker_id, "?"))
        # The job a lost worker ran was ended by whoever reaped it: it must not go on writing.
        cancel |= {st.job_id for st in states if st.worker_id in lost and st.job_id}
        return Beat(cancel=frozenset(cancel), lost=frozenset(lost), paused=paused)

    @retry_when_locked
    def report(self, state: WorkerState) -> None:
        """One worker's state between heartbeats: it finished a job, so it is idle and holds new models (the
        other workers route by this at once)."""
        with Session(self._writer) as s, s.begin():
            s.execute(update(Worker).where(Worker.id == state.worker_id).values(_values(state, self._now(s))))

    # -- claims -------------------------------------------------------------------------------------

    @retry_when_locked
    def claim(self, worker_id: str, device: str, holds: Iterable[str] = (), load: float = 0.0,
              available: Iterable[str] | None = None, only: Iterable[str] | None = None) -> Claim:
        """Take a pending job for this worker and mark it running, with the worker and device, in one
        transaction; the worker's row says it runs that job in the same transaction. `available`: the
        models whose files are on this host (None: not known, any); `only`: the job ids it may take (None:
        any)."""
        available = None if available is None else set(available)
        holds = set(holds)
        with Session(self._writer) as s, s.begin():
            if s.scalar(select(QueueState.value).where(QueueState.name == "paused")):
                return Claim()
            pending = select(Job.id, Job.model_id, Job.created_at).where(Job.status == JobStatus.PENDING.value)
            if only is not None:
                pending = pending.where(Job.id.in_(list(only)))
            candidates = s.execute(pending.order_by(Job.created_at, Job.seq).limit(_LOOK_AHEAD)).all()
            if not candidates:
                return Claim()
            others = [] if all(c.model_id in holds for c in candidates[:1]) else self._peers(s, worker_id)
            wanted, retry = self._preference(candidates, holds, load, available, others)
            # Only the job taken is locked, and one another worker is taking is skipped, not waited for: workers
            # claiming at once each get the next one in line.
            for job_id in wanted:
                job = s.scalars(select(Job).where(Job.id == job_id, Job.status == JobStatus.PENDING.value)
                                .with_for_update(skip_locked=True)).first()
                if job is None:
                    continue
                now = self._now(s)
                # The worker host's clock, as for finished_at (store._finish): the duration is one clock's.
                job.status, job.started_at = JobStatus.RUNNING.value, utcnow()
                job.worker, job.device, job.attempts = worker_id[:200], device[:64], (job.attempts or 0) + 1
                s.execute(update(Worker).where(Worker.id == worker_id).values(job_id=job.id, step=0, total_steps=0,
                                                                             heartbeat_at=now))
                s.flush()
                return Claim(job=job_record(job))
            return Claim(retry_s=max(0.05, retry if retry is not None else 0.05))

    @staticmethod
    def _preference(candidates: Sequence, holds: set[str], load: float, available: set[str] | None,
                    others: list[Worker]) -> tuple[list[str], float | None]:
        """The candidate job ids this worker should take, best first, and how soon to look again for the ones
        it leaves a moment to a better placed idle worker."""
        held = [c.id for c in candidates if c.model_id in holds]
        idle = [p for p in others if p.job_id is None]
        rest, retry = [], None
        for c in candidates:
            if c.model_id in holds:
                continue
            # A model whose files are not on this host is left to a worker whose host has them (if none has,
            # it is taken, and fails with the message saying what to download).
            able = [p for p in others if p.available is None or c.model_id in p.available]
            if available is not None and c.model_id not in available and any(p.available for p in able):
                continue
            # Better placed: an idle worker that holds the model, or one less loaded (less of its budget in
            # use, then fewer models held: tiny models weigh ~0) whose host has the files.
            better = any(c.model_id in p.models or (p.load, len(p.models)) < (load, len(holds))
                         for p in idle if p in able)
            waited = (utcnow() - c.created_at).total_seconds()  # the submitter's clock against this host's
            if better and waited < AFFINITY_WAIT_S:
                left = AFFINITY_WAIT_S - waited
                retry = left if retry is None else min(retry, left)
                continue
            rest.append(c.id)
        return held + rest, retry

    def _peers(self, s: Session, worker_id: str) -> list[Worker]:
        """The other live workers (any host)."""
        fresh = self._now(s) - timedelta(seconds=self.lease_s)
        return list(s.scalars(select(Worker).where(Worker.id != worker_id, Worker.heartbeat_at >= fresh)))

    # -- leases ---------------------------------------------------------------------------------

    def _dead(self, s: Session, now: datetime) -> list[tuple[Worker, str]]:
        """The rows of dead workers, each with why it is taken for dead."""
        late = now - timedelta(seconds=self.lease_s)
        rows = list(s.scalars(select(Worker)))
        mine = self.host_id
        dead = []
        for w in rows:
            if w.heartbeat_at < late:
                why = f"no heartbeat for {(now - w.heartbeat_at).total_seconds():.1f} s (lease {self.lease_s:g} s)"
            elif w.host_id == mine and w.pid != os.getpid() and w.pid_started is not None and (
                    started := _process_started(w.pid)) is not None and started != w.pid_started:
                why = f"its process {w.pid} on this host is gone"
            else:
                continue
            dead.append((w, why))
        return dead

    @retry_when_locked
    def reap(self) -> list[str]:
        """End the running jobs of dead workers and of no worker at all (a studio from before workers had
        rows, or a row already gone): interrupted, or back in line when its worker registered with
        `requeue_lost` (a job that has run
        MAX_ATTEMPTS times is interrupted). Remove the dead rows. Returns the ids of the jobs it changed."""
        # Looked at first in a read (what every heartbeat of every process does): a write only when needed.
        with Session(self.engine) as s, s.begin():
            if not self._dead(s, self._now(s)) and not s.scalar(self._lost_jobs(set()).with_only_columns(Job.id)):
                return []
        with Session(self._writer) as s, s.begin():
            now = self._now(s)
            dead = self._dead(s, now)
            for w, why in dead:
                log.warning("worker %s (%s) is taken for dead: %s", w.id, w.device, why)
            dead_ids = {w.id for w, _ in dead}
            # A dead worker's own setting says what becomes of its job (a job with no worker row: interrupted).
            requeue = {w.id for w, _ in dead if w.requeue_lost}
            lost = list(s.scalars(self._lost_jobs(dead_ids).with_for_update(skip_locked=True)))
            for job in lost:
                if job.cancel_requested:  # the user cancelled it before its worker died: it stays cancelled
                    job.status, job.finished_at, job.error = JobStatus.CANCELLED.value, now, None
                    continue
                if job.worker in requeue and (job.attempts or 0) < MAX_ATTEMPTS:
                    job.status, job.started_at, job.worker, job.device = JobStatus.PENDING.value, None, None, None
                    job.cancel_requested = False
                    continue
                job.status, job.finished_at = JobStatus.INTERRUPTED.value, now
                job.error = LOST_REASON.format(worker=job.worker or "a studio that has stopped")
                if job.started_at is not None:
                    job.duration_s = max(0.0, (now - job.started_at).total_seconds())
            if dead_ids:
                s.execute(delete(Worker).where(Worker.id.in_(dead_ids)))
            return [job.id for job in lost]

    def running_of(self, worker_ids: Iterable[str]) -> list[str]:
        """The jobs the given workers have claimed that are still running."""
        ids = list(worker_ids)
        with Session(self.engine) as s, s.begin():
            return list(s.scalars(select(Job.id).where(Job.status == JobStatus.RUNNING.value, Job.worker.in_(ids))))

    @staticmethod
    def _lost_jobs(dead_ids: set[str]):
        """Running jobs whose worker is dead, gone, or was never recorded."""
        alive = select(Worker.id).where(Worker.id.not_in(dead_ids)) if dead_ids else select(Worker.id)
        return select(Job).where(Job.status == JobStatus.RUNNING.value,
                                 or_(Job.worker.is_(None), Job.worker.not_in(alive)))

    def live(self, exclude: Iterable[str] = ()) -> list[LiveWorker]:
        """The workers whose heartbeat is within the lease, on every host, oldest first."""
        exclude = set(exclude)
        with Session(self.engine) as s, s.begin():
            fresh = self._now(s) - timedelta(seconds=self.lease_s)
            rows = s.scalars(select(Worker).where(Worker.heartbeat_at >= fresh).order_by(Worker.started_at))
            return [LiveWorker(w.id, w.host, w.device, w.job_id, w.step, w.total_steps, tuple(w.models or ()))
                    for w in rows if w.id not in exclude]

    def statuses(self, job_ids: Iterable[str]) -> dict[str, tuple[JobStatus, str | None, str | None]]:
        """The status, device and worker of each of these jobs that still exists, in one read (a follower's)."""
        ids = list(job_ids)
        if not ids:
            return {}
        with Session(self.engine) as s, s.begin():
            rows = s.execute(select(Job.id, Job.status, Job.device, Job.worker).where(Job.id.in_(ids)))
            return {job_id: (JobStatus(status), device, worker) for job_id, status, device, worker in rows}

    def progress(self, job_ids: Iterable[str]) -> dict[str, tuple[int, int]]:
        """How far the given running jobs got (step, total) by their workers' last heartbeats."""
        ids = list(job_ids)
        if not ids:
            return {}
        with Session(self.engine) as s, s.begin():
            rows = s.execute(select(Worker.job_id, Worker.step, Worker.total_steps).where(Worker.job_id.in_(ids)))
            return {job_id: (step, total) for job_id, step, total in rows}

    # -- queue-wide switches --------------------------------------------------------------------

    def paused(self) -> bool:
        with Session(self.engine) as s, s.begin():
            return bool(s.scalar(select(QueueState.value).where(QueueState.name == "paused")))

    @retry_when_locked
    def set_paused(self, paused: bool) -> None:
        """Pause or resume every worker of the queue (kept across restarts, like the queue itself)."""
        for attempt in range(2):
            try:
                with Session(self._writer) as s, s.begin():
                    s.merge(QueueState(name="paused", value=bool(paused), updated_at=self._now(s)))
                return
            except IntegrityError:  # another process wrote the first row meanwhile: now it is an update
                if attempt:
                    raise

    @retry_when_locked
    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker running `job_id` (on whatever host) to stop it; False when it is not running."""
        with Session(self._writer) as s, s.begin():
            done = s.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
                             .values(cancel_requested=True))
            return done.rowcount > 0

