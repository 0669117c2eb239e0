"""The history on PostgreSQL: what only it does (its URL, its connection errors, migrating from several
processes at once, the 0004 -> 0005 re-key by ALTERs, 64-bit numbers, a session time zone other than
UTC), and that its search finds exactly what SQLite's finds."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from studio.errors import InvalidInput
from studio.history import HistoryStore, JobFilter
from studio.history.db import (HEAD_REVISION, current_revision, downgrade, is_postgres, is_transient, make_engine,
                               migrate, postgres_url)
from studio.history.installed import InstalledModels

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def pg_store(pg_url: str):
    s = HistoryStore(pg_url)
    yield s
    s.close()


def _ids(page) -> list[str]:
    return [j.id for j in page.jobs]


def test_urls_pick_the_backend(tmp_path: Path) -> None:
    assert postgres_url("postgres://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    assert postgres_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert postgres_url(tmp_path / "x.db") is None and postgres_url("sqlite:///x.db") is None
    with pytest.raises(InvalidInput, match="psycopg"):
        postgres_url("postgresql+asyncpg://u:secret@h/d")
    engine = make_engine(f"sqlite:///{tmp_path / 'history.db'}")
    try:
        assert not is_postgres(engine)
        migrate(engine)
        assert (tmp_path / "history.db").is_file()
    finally:
        engine.dispose()


def test_a_server_that_is_not_there_is_named_without_its_password() -> None:
    with socket.socket() as s:  # a local port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InvalidInput) as caught:
        make_engine(f"postgresql://studio:hunter2@127.0.0.1:{port}/history")
    message = str(caught.value)
    assert f"127.0.0.1:{port}/history" in message and "hunter2" not in message


def test_postgres_transient_errors_are_retried() -> None:
    def failure(sqlstate_error: type[Exception]) -> OperationalError:
        return OperationalError("UPDATE jobs ...", {}, sqlstate_error("x"))

    assert is_transient(failure(psycopg.errors.SerializationFailure))
    assert is_transient(failure(psycopg.errors.DeadlockDetected))
    assert not is_transient(failure(psycopg.errors.DiskFull))


def test_two_processes_migrating_a_fresh_database_at_once(pg_url: str) -> None:
    script = ("import sys; from studio.history.db import make_engine, migrate; "
              "e = make_engine(sys.argv[1]); migrate(e); e.dispose(); print('migrated')")
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outcomes]
    assert all(out.strip() == "migrated" for out, _ in outcomes)
    engine = make_engine(pg_url)
    try:
        assert current_revision(engine) == HEAD_REVISION
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            assert conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")).scalar_one() == 1
            indexes = conn.execute(text("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")).scalars().all()
        assert "ix_jobs_prompt_trgm" in indexes and "ix_jobs_prompt" not in indexes
    finally:
        engine.dispose()


def test_jobs_from_before_the_rekey_are_numbered_by_date_and_keep_their_assets(pg_url: str) -> None:
    engine = make_engine(pg_url)
    migrate(engine, "0004")
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        for job_id, days, prompt in [("a", 3, "a lighthouse at dawn"), ("b", 2, "a lighthouse in a storm"),
                                     ("c", 4, "an old lighthouse")]:  # "c" written last, dated first
            conn.execute(text("INSERT INTO jobs (id, created_at, status, task, model_id, prompt, negative_prompt, "
                              "params, favorite) VALUES (:id, :created, 'done', 'image', 'm', :prompt, '', '{}', "
                              "false)"), {"id": job_id, "created": now - timedelta(days=days), "prompt": prompt})
        conn.execute(text("INSERT INTO assets (job_id, \"index\", kind, path, mime, bytes, sha256, created_at) "
                          "VALUES ('b', 0, 'image', 'image/b.png', 'image/png', 10, '', :now)"), {"now": now})
    engine.dispose()

    store = HistoryStore(pg_url)  # upgrades
    try:
        with store.engine.connect() as conn:
            seqs = dict(conn.execute(text("SELECT id, seq FROM jobs")).all())
        assert seqs == {"c": 1, "a": 2, "b": 3}
        assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == ["b", "a", "c"]
        new = store.create_job(task="image", model_id="m", prompt="a new lighthouse", params={}, seed=1)
        assert store.get_job(new) is not None
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT seq FROM jobs WHERE id = :id"), {"id": new}).scalar_one() == 4
        assert [a.path for a in store.get_job("b").assets] == ["image/b.png"]
        store.delete_job("b")  # the assets' foreign key still cascades
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM assets")).scalar_one() == 0

        downgrade(store.engine, "0004")
        with store.engine.connect() as conn:
            assert "seq" not in conn.execute(text("SELECT * FROM jobs LIMIT 0")).keys()
        migrate(store.engine)
        assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == [new, "a", "c"]
    finally:
        store.close()


def test_64_bit_seeds_and_sizes_and_a_session_time_zone_other_than_utc(pg_url: str) -> None:
    name = make_url(pg_url).database
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" SET timezone TO \'America/New_York\''))
        conn.commit()
    engine.dispose()
    store = HistoryStore(pg_url)
    try:
        job_id = store.create_job(task="image", model_id="m", prompt="p", params={"seed": 2**63 - 1}, seed=2**63 - 1)
        store.mark_running(job_id)
        store.mark_done(job_id, [dict(index=0, kind="video", path=f"{job_id}/0.mp4", mime="video/mp4",
                                      bytes=5 * 2**30, sha256="0" * 64)])
        job = store.get_job(job_id)
        assert job.seed == 2**63 - 1 and job.assets[0].bytes == 5 * 2**30
        assert abs(job.created_at - datetime.now(timezone.utc)) < timedelta(minutes=1)
        assert job.created_at.utcoffset() == timedelta(0)
        models = InstalledModels(store.engine)
        assert models.upsert("big", repo_id="r", revision="main", status="ready", bytes=40 * 2**30).bytes == 40 * 2**30
    finally:
        store.close()


# Prompts where SQLite's FTS5 trigram search, its LIKE for short words and PostgreSQL's ILIKE could part ways.
PROMPTS = ["一只猫在睡觉, 水彩", "猫", "100% cotton_shirt", "100 percent cotton shirt", 'she said "hi" to 50_50 odds',
           "It's a DOG's life", "its a dogs life", "back\\slash path", "Ünïcode ÉCOLE", "école ünïcode"]
QUERIES = ["猫在睡", "猫", '"100% cotton_"', "%", "_", '"0_5"', "it's", "'", '"dog\'s life"', "\\slash", "\\",
           '"hi" odds', "cotton", "ÉCOLE", "co", "s l", '"a dog"']


def test_postgres_search_finds_exactly_what_sqlite_finds(tmp_path: Path, pg_store: HistoryStore) -> None:
    sqlite_store = HistoryStore(tmp_path / "history.db")
    try:
        for store in (sqlite_store, pg_store):
            for i, prompt in enumerate(PROMPTS):
                store.create_job(task="image", model_id="m", prompt=prompt, params={}, seed=1, job_id=f"{i:032x}")
        for query in QUERIES:
            for filters in (JobFilter(text=query), JobFilter(text=query, task="image")):
                on_sqlite, on_pg = sqlite_store.find_jobs(filters), pg_store.find_jobs(filters)
                assert (_ids(on_pg), on_pg.total) == (_ids(on_sqlite), on_sqlite.total), query
        # And what the phrases above must find, spelled out.
        assert _ids(pg_store.find_jobs(JobFilter(text="猫在睡"))) == [f"{0:032x}"]
        assert _ids(pg_store.find_jobs(JobFilter(text='"100% cotton_"'))) == [f"{2:032x}"]
        assert _ids(pg_store.find_jobs(JobFilter(text='"dog\'s life"'))) == [f"{5:032x}"]
    finally:
        sqlite_store.close()


def test_no_server_is_a_skip_unless_ci_requires_one(monkeypatch) -> None:
    import pg

    monkeypatch.delenv("STUDIO_REQUIRE_PG", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server"):
        pg._unavailable("initdb was not found")
    monkeypatch.setenv("STUDIO_REQUIRE_PG", "1")
    with pytest.raises(pytest.fail.Exception, match="required"):
        pg._unavailable("initdb was not found")
