"""Engine and schema upkeep for the history database: SQLite in WAL mode, migrated by Alembic.

`make_engine` opens the file with the pragmas the app relies on; `migrate` brings the schema to the
newest revision (it runs at every start-up, a no-op when already there). Nothing here depends on
the process's working directory or on an `alembic.ini`.
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

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Execution option read by the `begin` hook: a writer's transaction takes SQLite's write lock at
# BEGIN (BEGIN IMMEDIATE). A deferred transaction that reads first and writes later cannot wait
# for the lock in WAL mode (it fails at once with "database is locked" when another writer got in
# between), while BEGIN IMMEDIATE waits politely for busy_timeout.
_BEGIN_OPTION = "studio_sqlite_begin"


# SQLite waits busy_timeout (5 s) for the write lock by itself; a writer that held it longer (a backup,
# someone's sqlite3 shell) makes a write fail. Every write of the studio (jobs, installed models,
# user presets) is retried for this long before giving up.
WRITE_RETRY_S = 60.0


def retry_when_locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """Retry a write (each is one transaction, rolled back on failure) while the database is locked."""

    @functools.wraps(method)
    def retrying(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + WRITE_RETRY_S
        while True:
            try:
                return method(*args, **kwargs)
            except OperationalError as err:
                locked = "locked" in str(err) or "busy" in str(err)
                if not locked or time.monotonic() > deadline:
                    raise
                log.warning("history database is locked; retrying %s", method.__name__)
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


def make_engine(db_path: Path) -> Engine:
    """An engine on the SQLite file `db_path` (its folder is created), with WAL and foreign keys on."""
    db_path = Path(db_path).expanduser().resolve()
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


def writer(engine: Engine) -> Engine:
    """The same engine (same pool), but its transactions take the write lock at BEGIN."""
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _config(connection: Connection) -> Config:
    """A programmatic Alembic config that runs the packaged migrations on `connection`."""
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    cfg.attributes["connection"] = connection
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    """Run an Alembic upgrade/downgrade in one write transaction with foreign keys suspended."""
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


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` (the newest by default); a no-op when already there.

    The whole upgrade is one transaction (SQLite has transactional DDL), so a failed migration
    leaves the previous schema intact, and two processes starting at once take turns.
    """
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the schema to `revision` ("base" drops every history table)."""
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty (never migrated) one."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
