"""The job history: schema migrations, job lifecycle, queries and concurrent use of one store."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from studio.history import AssetRecord, HistoryStore, JobRecord, JobStatus
from studio.history.db import HEAD_REVISION, MIGRATIONS_DIR, current_revision, downgrade, migrate
from studio.history.tables import Base, managed_by_orm, orm_objects

HEAD = "0006"


@pytest.fixture
def store(db_url):
    """A store on each backend: a SQLite file, then a fresh PostgreSQL database (conftest.db_url)."""
    s = HistoryStore(db_url)
    yield s
    s.close()


def _new_job(store: HistoryStore, task: str = "image", prompt: str = "a cat", **params) -> str:
    return store.create_job(
        task=task,
        model_id=f"tiny-{task}",
        prompt=prompt,
        negative_prompt="blurry",
        params={"steps": 4, **params},
        seed=42,
    )


def _asset(store: HistoryStore, job_id: str, index: int, **extra) -> None:
    store.add_asset(
        job_id,
        index=index,
        kind="image",
        path=f"{job_id}/{index}.png",
        mime="image/png",
        bytes=1234 + index,
        sha256=f"{index:064x}",
        **extra,
    )


def _tables(store: HistoryStore) -> set[str]:
    return set(inspect(store.engine).get_table_names())


def _count(store: HistoryStore, table: str) -> int:
    with store.engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


# -- schema ---------------------------------------------------------------------------------


def test_the_revision_a_start_up_skips_alembic_at_is_the_newest_migration() -> None:
    """A history already at HEAD_REVISION is not migrated at start-up (Alembic is not even imported): a new
    migration that forgot to move it would never run."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS_DIR.as_posix())
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD_REVISION == HEAD


def test_a_history_one_revision_behind_is_still_migrated_at_start_up(db_url) -> None:
    HistoryStore(db_url).close()
    store = HistoryStore(db_url)
    downgrade(store.engine, "0004")
    store.close()
    reopened = HistoryStore(db_url)
    try:
        assert current_revision(reopened.engine) == HEAD
    finally:
        reopened.close()


def test_empty_database_is_migrated_to_head_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "not" / "yet" / "there" / "history.db"
    store = HistoryStore(db)
    try:
        assert db.is_file()
        assert {"jobs", "assets", "installed_models", "alembic_version"} <= _tables(store)
        assert current_revision(store.engine) == HEAD
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    finally:
        store.close()
    # WAL is a property of the file: any other tool opening it sees it too.
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_is_a_noop_upgrade_that_keeps_the_data(db_url) -> None:
    db = db_url
    first = HistoryStore(db)
    job_id = _new_job(first, prompt="kept across restarts")
    first.close()

    second = HistoryStore(db)
    try:
        assert current_revision(second.engine) == HEAD
        job = second.get_job(job_id)
        assert job is not None and job.prompt == "kept across restarts"
        migrate(second.engine)  # and again, explicitly
        assert [j.id for j in second.list_jobs()] == [job_id]
    finally:
        second.close()


def test_migrated_schema_matches_the_orm_tables(store: HistoryStore) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": managed_by_orm,
                                                     "include_object": orm_objects(conn.dialect.name)})
        assert compare_metadata(ctx, Base.metadata) == []


def test_downgrade_to_base_and_upgrade_again(store: HistoryStore) -> None:
    _new_job(store)
    downgrade(store.engine, "base")
    assert not {"jobs", "assets", "installed_models"} & _tables(store)
    assert current_revision(store.engine) is None

    migrate(store.engine)
    assert {"jobs", "assets", "installed_models"} <= _tables(store)
    assert current_revision(store.engine) == HEAD
    assert store.list_jobs() == []  # recreated empty, and usable
    job_id = _new_job(store)
    assert store.get_job(job_id) is not None


def test_several_processes_opening_a_new_database_at_once(db_url) -> None:
    db = db_url
    errors: list[BaseException] = []
    stores: list[HistoryStore] = []
    lock = threading.Lock()

    def open_store() -> None:
        try:
            s = HistoryStore(db)
            with lock:
                stores.append(s)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert all(current_revision(s.engine) == HEAD for s in stores)
    finally:
        for s in stores:
            s.close()


# -- lifecycle ------------------------------------------------------------------------------


def test_job_lifecycle(store: HistoryStore) -> None:
    params = {"steps": 30, "size": {"w": 1024, "h": 768}, "views": ["flip", "rot90"], "cfg": 4.5}
    prompt = "a café on Mars at dusk 🚀🌅, 日本語も"
    job_id = store.create_job(
        task="image", model_id="lumina-next", prompt=prompt, negative_prompt="", params=params, seed=7
    )
    assert len(job_id) == 32 and int(job_id, 16) >= 0

    job = store.get_job(job_id)
    assert isinstance(job, JobRecord)
    assert job.status is JobStatus.PENDING
    assert job.started_at is None and job.finished_at is None and job.duration_s is None
    assert job.assets == ()

    store.mark_running(job_id)
    running = store.get_job(job_id)
    assert running is not None and running.status is JobStatus.RUNNING
    assert running.started_at is not None

    # Written out of order on purpose: the record lists them by index.
    _asset(store, job_id, 1, width=1024, height=768)
    _asset(store, job_id, 0, width=1024, height=768)
    time.sleep(0.01)
    store.mark_done(job_id)

    done = store.get_job(job_id)
    assert done is not None
    assert done.status is JobStatus.DONE
    assert done.prompt == prompt
    assert done.params == params
    assert done.seed == 7 and done.task == "image" and done.model_id == "lumina-next"
    assert done.error is None
    assert done.duration_s is not None and done.duration_s >= 0.01 - 1e-3
    assert done.finished_at == done.started_at + timedelta(seconds=done.duration_s)

    for stamp in (done.created_at, done.started_at, done.finished_at):
        assert stamp is not None and stamp.tzinfo is not None
        assert stamp.utcoffset() == timedelta(0)
    assert done.created_at <= done.started_at <= done.finished_at

    assert [a.index for a in done.assets] == [0, 1]
    first = done.assets[0]
    assert isinstance(first, AssetRecord)
    assert first.path == f"{job_id}/0.png" and first.job_id == job_id
    assert (first.kind, first.mime, first.width, first.height) == ("image", "image/png", 1024, 768)
    assert first.bytes == 1234 and first.sha256 == "0" * 64
    assert first.created_at.tzinfo is not None and first.created_at.utcoffset() == timedelta(0)


def test_timestamps_are_stored_as_utc(store: HistoryStore) -> None:
    job_id = _new_job(store)
    job = store.get_job(job_id)
    assert job is not None
    assert abs(datetime.now(timezone.utc) - job.created_at) < timedelta(minutes=1)


def test_impossible_status_changes_are_refused(store: HistoryStore) -> None:
    job_id = _new_job(store)
    with pytest.raises(ValueError, match="pending"):
        store.mark_done(job_id)
    with pytest.raises(ValueError):
        _asset(store, job_id, 0)  # nothing ran yet
    store.mark_running(job_id)
    with pytest.raises(ValueError):
        store.mark_running(job_id)
    store.mark_done(job_id)
    with pytest.raises(ValueError):
        store.mark_done(job_id)
    with pytest.raises(ValueError):
        store.mark_failed(job_id, "too late")
    job = store.get_job(job_id)
    assert job is not None and job.status is JobStatus.DONE and job.error is None


def test_unknown_job_ids(store: HistoryStore) -> None:
    missing = "0" * 32
    assert store.get_job(missing) is None
    for call in (
        lambda: store.mark_running(missing),
        lambda: store.mark_done(missing),
        lambda: store.mark_failed(missing, "x"),
        lambda: store.mark_cancelled(missing),
        lambda: store.delete_job(missing),
        lambda: _asset(store, missing, 0),
    ):
        with pytest.raises(KeyError):
            call()


def test_asset_paths_are_unique_and_relative(store: HistoryStore) -> None:
    job_id = _new_job(store)
    store.mark_running(job_id)
    _asset(store, job_id, 0)
    with pytest.raises(ValueError, match="already recorded"):
        _asset(store, job_id, 0)
    for bad in ("/etc/passwd", "../outside.png", "a\\b.png", ""):
        with pytest.raises(ValueError):
            store.add_asset(
                job_id, index=5, kind="image", path=bad, mime="image/png", bytes=1, sha256="0" * 64
            )
    job = store.get_job(job_id)
    assert job is not None and len(job.assets) == 1


def test_a_job_is_done_with_all_its_files_recorded_or_not_done_at_all(store: HistoryStore) -> None:
    job_id = _new_job(store)
    store.mark_running(job_id)
    files = [dict(index=i, kind="image", path=f"{job_id}/{i}.png", mime="image/png", bytes=10 + i,
                  sha256=f"{i:064x}", width=64, height=64) for i in range(2)]
    taken = _new_job(store)
    store.mark_running(taken)
    _asset(store, taken, 0, width=64)
    clash = dict(files[1], path=f"{taken}/0.png")  # a path another job already owns
    with pytest.raises(ValueError, match="already recorded"):
        store.mark_done(job_id, [files[0], clash])
    half = store.get_job(job_id)
    assert half is not None and half.status is JobStatus.RUNNING and not half.assets
    store.mark_done(job_id, files)
    done = store.get_job(job_id)
    assert done is not None and done.status is JobStatus.DONE
    assert [(a.index, a.path, a.bytes) for a in done.assets] == [(0, f"{job_id}/0.png", 10), (1, f"{job_id}/1.png", 11)]


def test_failed_jobs_keep_their_error(store: HistoryStore) -> None:
    never_ran = _new_job(store)
    store.mark_failed(never_ran, "InvalidInput: steps must be between 1 and 70")
    crashed = _new_job(store)
    store.mark_running(crashed)
    store.mark_failed(crashed, "CUDA out of memory.\nTried to allocate 2.00 GiB")

    a = store.get_job(never_ran)
    b = store.get_job(crashed)
    assert a is not None and b is not None
    assert a.status is b.status is JobStatus.FAILED
    assert a.error == "InvalidInput: steps must be between 1 and 70"
    assert b.error == "CUDA out of memory.\nTried to allocate 2.00 GiB"
    assert a.finished_at is not None and a.duration_s is None  # it never started
    assert b.finished_at is not None and b.duration_s is not None and b.duration_s >= 0


def test_cancel_and_interrupt(store: HistoryStore) -> None:
    queued, running, finished = _new_job(store), _new_job(store), _new_job(store)
    store.mark_cancelled(queued)
    store.mark_running(running)
    store.mark_running(finished)
    store.mark_done(finished)

    assert store.interrupt_running() == [running]
    statuses = {j.id: j.status for j in store.list_jobs()}
    assert statuses == {
        queued: JobStatus.CANCELLED,
        running: JobStatus.INTERRUPTED,
        finished: JobStatus.DONE,
    }
    assert store.interrupt_running() == []


def test_list_jobs_newest_first_with_filters_and_paging(store: HistoryStore) -> None:
    ids = []
    for i in range(6):
        task = "image" if i % 2 == 0 else "video"
        job_id = _new_job(store, task=task, prompt=f"prompt {i}")
        ids.append(job_id)
        if i < 4:
            store.mark_running(job_id)
            store.mark_done(job_id)
    ids_newest_first = ids[::-1]

    assert [j.id for j in store.list_jobs()] == ids_newest_first
    assert [j.id for j in store.list_jobs(task="image")] == [ids[4], ids[2], ids[0]]
    assert [j.id for j in store.list_jobs(task="video", status=JobStatus.DONE)] == [ids[3], ids[1]]
    assert [j.id for j in store.list_jobs(status=JobStatus.PENDING)] == [ids[5], ids[4]]
    assert [j.id for j in store.list_jobs(status="done")] == ids_newest_first[2:]
    assert [j.id for j in store.list_jobs(limit=2)] == ids_newest_first[:2]
    assert [j.id for j in store.list_jobs(limit=2, offset=2)] == ids_newest_first[2:4]
    assert store.list_jobs(offset=6) == []
    assert store.list_jobs(task="music") == []


# -- deletion -------------------------------------------------------------------------------


def test_deleting_a_job_row_cascades_to_its_assets(store: HistoryStore) -> None:
    keep, drop = _new_job(store), _new_job(store)
    for job_id in (keep, drop):
        store.mark_running(job_id)
        _asset(store, job_id, 0)
        _asset(store, job_id, 1)
    assert _count(store, "assets") == 4

    # Plain SQL, as a user with the sqlite3 shell would: the database itself enforces it.
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": drop})
    assert store.get_job(drop) is None
    assert _count(store, "assets") == 2
    keep_job = store.get_job(keep)
    assert keep_job is not None and len(keep_job.assets) == 2

    removed = store.delete_job(keep)
    assert [a.path for a in removed.assets] == [f"{keep}/0.png", f"{keep}/1.png"]
    assert _count(store, "assets") == 0 and _count(store, "jobs") == 0


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_concurrent_writers_share_one_store(store: HistoryStore) -> None:
    errors: list[BaseException] = []
    stop_reading = threading.Event()

    def write(worker: int) -> None:
        try:
            for i in range(25):
                job_id = _new_job(store, prompt=f"worker {worker} job {i}", worker=worker, i=i)
                store.mark_running(job_id)
                _asset(store, job_id, 0)
                store.mark_done(job_id)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def read() -> None:
        # The UI thread keeps refreshing the gallery while the workers write.
        try:
            while not stop_reading.is_set():
                store.list_jobs(limit=20)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop_reading.set()
    reader.join()

    assert errors == []
    done = store.list_jobs(limit=1000, status=JobStatus.DONE)
    assert len(done) == 100
    assert {(j.params["worker"], j.params["i"]) for j in done} == {
        (w, i) for w in range(4) for i in range(25)
    }
    assert all(len(j.assets) == 1 for j in done)
    assert store.list_jobs(status=JobStatus.RUNNING) == []
