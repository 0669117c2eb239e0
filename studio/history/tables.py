"""ORM tables of the job history: one row per job, one row per output file (asset).

These classes are the schema the Alembic migrations build; they are used by `store.py` only, the
rest of the app sees the frozen records that the store returns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

# Named constraints: SQLite "batch" migrations recreate tables and can only drop or alter a
# constraint that has a name, so every index/key gets a predictable one from the start.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that always reads back as an aware UTC datetime.

    SQLite has no time zone type and SQLAlchemy's SQLite DATETIME drops tzinfo on the way in, so
    values are normalised to UTC before storing and the UTC zone is re-attached on the way out.
    PostgreSQL's timestamptz gets the aware value itself: a naive one would be read in the session's
    time zone, which need not be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value is ambiguous; refusing it keeps local-time bugs out of the history.
            raise ValueError("history timestamps must be timezone-aware")
        if dialect.name == "postgresql":
            return value.astimezone(timezone.utc)
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# The FTS5 full-text index of job prompts (migrations 0004, 0005). SQLAlchemy has no model for virtual
# tables, so the store writes it with SQL; FTS5 keeps its data in shadow tables named jobs_fts_*. An
# index row's rowid is its job's `seq`, so a match joins to its job by the primary key.
JOBS_FTS = "jobs_fts"
# PostgreSQL has no jobs_fts: search reads this GIN trigram index of jobs.prompt (pg_trgm; migration 0004).
JOBS_PROMPT_TRGM = "ix_jobs_prompt_trgm"
# SQLite only: the narrow copy of the prompts that LIKE scans (see Job). A b-tree entry on PostgreSQL
# can't hold a long prompt (about 2.7 kB at most), and the trigram index serves every search there.
JOBS_PROMPT_INDEX = "ix_jobs_prompt"

# SQLite integers are 64-bit whatever the declared type; PostgreSQL's INTEGER is 32-bit, too small for a
# seed or a file's size in bytes. The variant keeps SQLite's DDL (INTEGER) as it was.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def managed_by_orm(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic `include_name` hook: compare only what these classes describe, not the full-text search's
    own tables (SQLite) or index (PostgreSQL)."""
    if type_ == "index" and name == JOBS_PROMPT_TRGM:
        return False
    return not (type_ == "table" and name is not None and name.startswith(JOBS_FTS))


def orm_objects(dialect_name: str) -> Callable[..., bool]:
    """Alembic `include_object` hook for one backend: on PostgreSQL the ORM's SQLite-only prompt index
    is not expected in the database."""

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (dialect_name == "postgresql" and type_ == "index" and name == JOBS_PROMPT_INDEX)

    return include


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (the only kind the history stores)."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base; its metadata is Alembic's `target_metadata`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One generation request, from submission to its end state.

    `seq` is the row's integer key in creation order (SQLite's rowid, declared so that VACUUM or a table
    copy never renumbers it: the full-text index is keyed by it). The store keeps `created_at` in the same
    order (a new job is never dated before the newest one), so newest first is also highest `seq` first.
    Everything outside the table addresses a job by `id`, which is the ORM's identity."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)  # uuid4().hex
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    task: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    seed: Mapped[int | None] = mapped_column(BigInt)
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Float)
    placement: Mapped[str | None] = mapped_column(String(32))  # how the model's weights were placed
    favorite: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    worker: Mapped[str | None] = mapped_column(String(200))  # the worker that claimed it (Worker.id)
    device: Mapped[str | None] = mapped_column(String(64))  # the device (or group) it ran on: "cuda:1"
    # Asked by a process that does not run the job; its worker stops at the next step (history/workers.py).
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # claims so far (re-queues)

    # The gallery pages newest first within a filter; each filter column paired with created_at lets
    # SQLite walk the index in order and stop after one page, even at 100,000 jobs (bench/gallery.py).
    __table_args__ = (
        Index("ix_jobs_task_created", "task", "created_at"),
        Index("ix_jobs_model_created", "model_id", "created_at"),
        Index("ix_jobs_status_created", "status", "created_at"),
        Index("ix_jobs_favorite_created", "favorite", "created_at"),
        # Not for lookups: a search word too short for the full-text index is matched with LIKE on every
        # prompt, and scanning this narrow copy of them is faster than reading every whole job row.
        Index(JOBS_PROMPT_INDEX, "prompt"),
    )

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:
        # Session.get(Job, job_id) and the identity map go by the public id, not by seq.
        return {"primary_key": [cls.__table__.c.id]}

    assets: Mapped[list[Asset]] = relationship(
        back_populates="job",
        order_by="Asset.index",
        cascade="all, delete-orphan",
        # The database deletes assets itself (ON DELETE CASCADE); don't load them just to delete.
        passive_deletes=True,
    )


class Asset(Base):
    """One output file of a job (an image, a video, a sound), addressed relative to outputs/."""

    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(1024), unique=True)
    mime: Mapped[str] = mapped_column(String(100))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    bytes: Mapped[int] = mapped_column(BigInt)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    job: Mapped[Job] = relationship(back_populates="assets")


class InstalledModel(Base):
    """A model the studio fetched (or is fetching) into the model cache: one row per card."""

    __tablename__ = "installed_models"

    card_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo_id: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str] = mapped_column(String(200))  # what was asked for ("main", a tag, a sha)
    commit: Mapped[str | None] = mapped_column(String(40))  # what it resolved to
    local_path: Mapped[str | None] = mapped_column(String(1024))  # the snapshot folder
    bytes: Mapped[int] = mapped_column(BigInt, default=0)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    installed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UserPreset(Base):
    """A preset or style template the user saved or imported (the shipped ones live in presets/*.yaml).

    kind "preset": `modality` is the tab (image, video, audio, music, compositional, anagrams) and `data`
    holds {prompt, negative_prompt, params}. kind "style": `modality` is "" and `data` holds
    {prompt (with a {prompt} placeholder), negative_prompt}.
    """

    __tablename__ = "user_presets"
    __table_args__ = (UniqueConstraint("kind", "modality", "name", name="uq_user_presets_kind_modality_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    modality: Mapped[str] = mapped_column(String(32), default="")
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(100), default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Worker(Base):
    """A running worker: one device (or device group) of a `studio serve` or `studio worker` process on
    some host, and what the queue needs to know about it.

    Its heartbeat says it is alive (a row older than the lease is a dead worker: history/workers.py);
    `job_id`, `step` and `total_steps` are the job it runs and how far it got (for other processes'
    progress bars), `models` the cards its memory holds and `load` the share of its device budget in
    use (for routing: a job goes to a worker that holds its model, else to the least loaded)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:device
    host: Mapped[str] = mapped_column(String(200))
    host_id: Mapped[str] = mapped_column(String(64))  # hostname + boot id: same value = same running kernel
    pid: Mapped[int] = mapped_column(Integer)
    pid_started: Mapped[float | None] = mapped_column(Float)  # the process's start time (tells pid reuse)
    device: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    job_id: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    total_steps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    models: Mapped[list[str]] = mapped_column(JSON, default=list)
    load: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    available: Mapped[list[str] | None] = mapped_column(JSON)  # models whose files are on its host (None: any)
    requeue_lost: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # if it dies


class QueueState(Base):
    """A queue-wide switch by name, read by every worker on every host (`paused`: claim nothing new)."""

    __tablename__ = "queue_state"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
