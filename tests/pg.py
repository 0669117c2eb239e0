"""A PostgreSQL server for the tests: one per test session, a fresh database per test.

`STUDIO_TEST_PG_URL` (an admin URL of a running server, e.g. postgresql://studio:studio@127.0.0.1:54329/postgres)
is used when set, as CI does (tools/pg_throwaway.sh). Otherwise, where PostgreSQL's binaries are installed, a
throw-away cluster is started in a temporary folder (fsync off: nothing in it needs to survive) and stopped
at the session's end. Without either the PostgreSQL tests are skipped, unless `STUDIO_REQUIRE_PG=1` (CI),
which makes that a failure: a CI run must not pass by silently testing SQLite alone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import free_port
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

_USER = "studio"
_PASSWORD = "studio"


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: pg_config's answer, else Debian's newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if found and (Path(found) / "initdb").is_file():
            return Path(found)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


class ThrowawayCluster:
    """initdb + pg_ctl start in a temporary folder; as root the server runs as `postgres` (initdb refuses root)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # Not under pytest's tmp_path: its folders are 0700 root's, which the postgres user could not enter.
        self.folder = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        self.folder.chmod(0o755)
        self.port = free_port()
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_owner, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr or done.stdout}\n{tail}")

    def start(self) -> str:
        data = self.folder / "data"
        # Trust on this cluster's own 127.0.0.1 port: a test server with nothing in it worth a password.
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", _USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "server.log"), "-w",
                  "-o", options, "start")
        return f"postgresql://{_USER}:{_PASSWORD}@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("STUDIO_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL is required (STUDIO_REQUIRE_PG=1) but {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason} (set STUDIO_TEST_PG_URL or install postgresql)")


def pg_server() -> Iterator[str]:
    """The admin URL of the session's server (a generator, for a session-scoped fixture)."""
    given = os.environ.get("STUDIO_TEST_PG_URL")
    if given:
        yield given
        return
    bindir = _bindir()
    if bindir is None:
        _unavailable("STUDIO_TEST_PG_URL is not set and PostgreSQL's initdb was not found")
        return
    cluster = None
    try:
        cluster = ThrowawayCluster(bindir)  # as root: needs the `postgres` user (LookupError without it)
        url = cluster.start()
    except (OSError, RuntimeError, LookupError) as err:
        if cluster is not None:
            with contextlib.suppress(OSError, RuntimeError):
                cluster.stop()
        _unavailable(f"a throw-away cluster did not start: {err}")
        return
    try:
        yield url
    finally:
        cluster.stop()


def _admin_engine(admin_url: str):
    # AUTOCOMMIT: CREATE/DROP DATABASE can't run inside a transaction.
    url = make_url(admin_url).set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)


def fresh_pg_url(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server of `admin_url`, as a postgresql:// URL; dropped afterwards
    (WITH (FORCE): connections a test left open do not keep it)."""
    name = f"studio_test_{uuid.uuid4().hex[:16]}"
    admin = _admin_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        yield url
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
