"""Engine and schema upkeep for the history database: a SQLite file in WAL mode, or a PostgreSQL
database named by a URL; the same tables and the same Alembic migrations on both.

`make_engine` opens a SQLite file (a `Path`, or a `sqlite:///` URL) with the pragmas the app relies
on, or connects to PostgreSQL (`postgresql://` or `postgres://` URLs, driven by psycopg 3, READ
COMMITTED); `migrate` brings the schema to the newest revision (it runs at every start-up, a no-op
when already there: then one SELECT, and Alembic is not even imported, which a CLI command's start
notices). On PostgreSQL a migration holds an advisory lock, so processes starting at once take turns.
`retry_when_locked` retries a write over what is transient on each backend (SQLite's lock, a
PostgreSQL serialization failure, deadlock or dropped connection). Nothing here depends on the
process's working directory or on an `alembic.ini`.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, ProgrammingError

from ..errors import InvalidInput

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The newest revision in migrations/versions (a test checks it is Alembic's head): a database already
# there needs no migration run.
HEAD_REVISION = "0006"

# Execution option read by the `begin` hook: a writer's transaction takes SQLite's write lock at
# BEGIN (BEGIN IMMEDIATE). A deferred transaction that reads first and writes later cannot wait
# for the lock in WAL mode (it fails at once with "database is locked" when another writer got in
# between), while BEGIN IMMEDIATE waits politely for busy_timeout.
_BEGIN_OPTION = "studio_sqlite_begin"


# SQLite waits busy_timeout (5 s) for the write lock by itself; a writer that held it longer (a backup,
# someone's sqlite3 shell) makes a write fail. Every write of the studio (jobs, installed models,
# user presets) is retried for this long before giving up.
WRITE_RETRY_S = 60.0

# PostgreSQL's errors that say "run the same transaction again": serialization_failure and
# deadlock_detected (the server already rolled it back).
_PG_RETRYABLE = {"40001", "40P01"}
# Any fixed number: the key of the advisory lock a PostgreSQL migration holds (see _run).
_MIGRATION_LOCK_KEY = 0x5354_5544_494F  # "STUDIO"


def is_postgres(engine: Engine | Connection) -> bool:
    """Whether `engine` (or a connection) talks to PostgreSQL rather than to a SQLite file."""
    return engine.dialect.name == "postgresql"


def is_transient(err: DBAPIError) -> bool:
    """Whether a failed transaction may well succeed when run again: SQLite's write lock held by another
    writer; on PostgreSQL a serialization failure, a deadlock, or a connection that dropped (the pool
    pings before reuse, so the retry gets a fresh one)."""
    if err.connection_invalidated:
        return True
    sqlstate = getattr(err.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate in _PG_RETRYABLE
    return isinstance(err, OperationalError) and ("locked" in str(err) or "busy" in str(err))


def is_query_error(err: DBAPIError) -> bool:
    """Whether a failed read blames its statement (what the user searched for), not the database: on
    SQLite any OperationalError but a lock; on PostgreSQL a data exception, a syntax error or a limit hit
    (SQLSTATE classes 22, 42, 54), never a connection or server problem."""
    sqlstate = getattr(err.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate[:2] in ("22", "42", "54")
    return isinstance(err, OperationalError) and not is_transient(err)


def retry_when_locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Retry a write (each is one transaction, rolled back on failure) while the database is locked,
    or on PostgreSQL while it fails transiently (see is_transient)."""

    @functools.wraps(method)
    def retrying(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                return method(*args, **kwargs)
            except DBAPIError as err:
                if not is_transient(err) or time.monotonic() > deadline:
                    raise
                log.warning("history database is locked or busy (%s); retrying %s",
                            type(err.orig).__name__, method.__name__)
                time.sleep(0.5)

    return retrying


def _json_dumps(value: Any) -> str:
    # Keep non-ASCII prompt text readable when someone opens the database by hand.
    return json.dumps(value, ensure_ascii=False)


def _ensure_wal(cursor: Any) -> None:
    """Switch the file to WAL unless it already is (the mode is stored in the file).

    Switching needs the file to itself and SQLite does not wait on the busy handler for it, so when
    another connection is busy (say, migrating a brand-new file) the switch is retried briefly.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or attempt == 99:
                raise
            time.sleep(0.05)


def postgres_url(database: Path | str) -> str | None:
    """The SQLAlchemy URL (psycopg 3 driver) of a `postgresql://` or `postgres://` URL; None for SQLite."""
    if not isinstance(database, str):
        return None
    for scheme in ("postgresql://", "postgres://", "postgresql+psycopg://"):
        if database.startswith(scheme):
            return "postgresql+psycopg://" + database[len(scheme):]
    if database.startswith("postgresql+") or database.startswith("postgres+"):
        raise InvalidInput(f"the history database URL must use the psycopg driver (postgresql://...): "
                           f"{_safe_url(database)}")
    return None


def _safe_url(url: str) -> str:
    """`url` without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1]


def make_engine(database: Path | str) -> Engine:
    """An engine on the history database: a PostgreSQL URL (see postgres_url), or else a SQLite file
    (a path, or a `sqlite:///` URL; its folder is created), with WAL and foreign keys on."""
    url = postgres_url(database)
    if url is not None:
        return _postgres_engine(url)
    if isinstance(database, str) and database.startswith("sqlite:///"):
        database = database[len("sqlite:///"):]
    db_path = Path(database).expanduser().resolve()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db_path.as_posix()}", json_serializer=_json_dumps)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _on_begin); stop the sqlite3 module from doing it its
        # own way (lazily, only before DML), which breaks transactional reads and DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first, so that switching the journal mode waits for other processes.
            cursor.execute("PRAGMA busy_timeout=5000")
            _ensure_wal(cursor)  # readers never block the writer
            cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite, per connection
            cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL, far fewer fsyncs
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _postgres_engine(url: str) -> Engine:
    """An engine on a PostgreSQL database, checked by connecting once (a wrong URL fails here, clearly)."""
    engine = create_engine(url, json_serializer=_json_dumps, pool_pre_ping=True, isolation_level="READ COMMITTED")
    try:
        with engine.connect():
            pass
    except DBAPIError as err:
        engine.dispose()
        reason = str(err.orig).strip().splitlines()[0] if str(err.orig).strip() else type(err.orig).__name__
        raise InvalidInput(f"could not connect to the history database {_safe_url(url)}: {reason}") from None
    return engine


def writer(engine: Engine) -> Engine:
    """The same engine (same pool), but its transactions take the write lock at BEGIN (SQLite); on
    PostgreSQL, which locks rows as it writes them, the engine itself."""
    if is_postgres(engine):
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _config(connection: Connection) -> Any:
    """A programmatic Alembic config that runs the packaged migrations on `connection`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    cfg.attributes["connection"] = connection
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    """Run an Alembic upgrade/downgrade in one write transaction (with foreign keys suspended on SQLite)."""
    from alembic import command

    if is_postgres(engine):
        _run_postgres(engine, action, revision)
        return
    with writer(engine).connect() as conn:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        # Batch migrations on SQLite copy a table, drop the old one and rename the copy; with
        # foreign keys on, dropping `jobs` would cascade-delete every asset. The pragma cannot be
        # changed inside a transaction, so it is switched on the raw connection, before BEGIN.
        dbapi.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                getattr(command, action)(_config(conn), revision)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"history migration left dangling references: {broken[:5]}")
        finally:
            dbapi.execute("PRAGMA foreign_keys=ON")


def _run_postgres(engine: Engine, action: str, revision: str) -> None:
    """PostgreSQL has transactional DDL too: the command runs in one transaction, which first takes an
    advisory lock (released at its end), so processes migrating at once take turns; the next in line
    then finds the schema already there (READ COMMITTED: it reads what the first committed)."""
    from alembic import command

    with engine.connect() as conn, conn.begin():
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        getattr(command, action)(_config(conn), revision)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (the newest by default); a no-op when already there.

    The whole upgrade is one transaction (SQLite and PostgreSQL have transactional DDL), so a failed
    migration leaves the previous schema intact, and two processes starting at once take turns.
    """
    if revision in ("head", HEAD_REVISION) and _recorded_revision(engine) == HEAD_REVISION:
        return
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to `revision` ("base" drops every history table)."""
    _run(engine, "downgrade", revision)


def _recorded_revision(engine: Engine) -> str | None:
    """What `alembic_version` says, read without Alembic; None when there is no such table (a new file or
    database: on PostgreSQL an UndefinedTable error, which aborts the transaction, rolled back on close)."""
    with engine.connect() as conn:
        try:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        except (OperationalError, ProgrammingError):
            return None
    return rows[0] if len(rows) == 1 else None


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty (never migrated) one."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
