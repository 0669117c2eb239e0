"""Gallery search over the history: the right jobs, newest first, with the right total, through every
path a query can take (filters alone, full-text words, short words, both), after deletes, a clock that
stepped back, a migration that copies the jobs table, and the upgrade of a history written before the
index was keyed by the job's integer key (revision 0004)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, String, text

import studio.history.store as store_module
from studio.history import HistoryStore, JobFilter, JobStatus
from studio.history.db import HEAD_REVISION, current_revision, downgrade, make_engine, migrate
from studio.history import search

WORDS = ["red", "fox", "storm", "lighthouse", "go", "km", "tea", "猫在睡觉", "quiet", "dawn"]


@pytest.fixture
def store(db_url):
    """A store on each backend: a SQLite file, then a fresh PostgreSQL database (conftest.db_url)."""
    s = HistoryStore(db_url)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path):
    """A store on a SQLite file, for what only SQLite does (batch migrations' table copy)."""
    s = HistoryStore(tmp_path / "history.db")
    yield s
    s.close()


def _ids(page) -> list[str]:
    return [j.id for j in page.jobs]


def _matches(job, filters: JobFilter) -> bool:
    """What the gallery promises, in plain Python: every word (any case) in the prompt, every filter."""
    words = filters.text.split()
    return (all(w.lower() in job.prompt.lower() for w in words)
            and (filters.task is None or job.task == filters.task)
            and (not filters.favorites or job.favorite)
            and (filters.status is None or job.status.value == filters.status))


def test_every_kind_of_query_finds_the_right_jobs_newest_first_with_the_total(store, monkeypatch):
    # Words are judged common from their 256 newest matches; a few do at this size, so that both ways
    # of counting a filtered search are taken, and compared with the plain answer, below.
    monkeypatch.setattr(search, "_PROBE", 4)
    rng = random.Random(7)
    made = []
    for i in range(90):
        prompt = " ".join(rng.sample(WORDS, 3)) + f" n{i}"
        job_id = store.create_job(task=rng.choice(["image", "audio"]), model_id="m", prompt=prompt,
                                  params={}, seed=1)
        if rng.random() < 0.3:
            store.set_favorite(job_id, True)
        made.append(job_id)
    for victim in made[5::9]:  # gaps, so the keys are not simply 1..n
        store.delete_job(victim)
    everyone = store.find_jobs(limit=1000).jobs
    assert len(everyone) == 80 and _ids(store.find_jobs(limit=1000)) == [i for i in reversed(made)
                                                                         if i not in made[5::9]]
    queries = [JobFilter(text="lighthouse"), JobFilter(text="red fox"), JobFilter(text="storm", task="audio"),
               JobFilter(text="go"), JobFilter(text="go fox"), JobFilter(text="猫在睡", favorites=True),
               JobFilter(text="LIGHTHOUSE dawn", task="image"), JobFilter(task="audio", favorites=True),
               JobFilter(text="tea", status="pending"), JobFilter(text="unicorn")]
    rare = next(j for j in everyone if j.prompt.endswith(" n17"))  # a word in one prompt, and a filter
    queries.append(JobFilter(text="n17", task=rare.task))
    with store.engine.connect() as conn:  # SQLite's two ways of counting; PostgreSQL's planner has its own
        sqlite = conn.dialect.name == "sqlite"
        assert search.count_from_filter_index(conn, JobFilter(text="storm", task="audio")) is sqlite
        assert not search.count_from_filter_index(conn, queries[-1])
    for filters in queries:
        expected = [j.id for j in everyone if _matches(j, filters)]
        assert expected or filters.text == "unicorn"
        first = store.find_jobs(filters, limit=7)
        assert (_ids(first), first.total) == (expected[:7], len(expected)), filters
        second = store.find_jobs(filters, limit=7, offset=7)
        assert (_ids(second), second.total) == (expected[7:14], len(expected)), filters
        past_the_end = store.find_jobs(filters, limit=7, offset=500)
        assert (past_the_end.jobs, past_the_end.total) == ([], len(expected)), filters
        assert store.find_jobs(filters, limit=0).total == len(expected)


def test_a_deleted_job_is_no_longer_found(store):
    keep = store.create_job(task="image", model_id="m", prompt="a lighthouse at dawn", params={}, seed=1)
    drop = store.create_job(task="image", model_id="m", prompt="a lighthouse in a storm", params={}, seed=1)
    assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == [drop, keep]
    store.delete_job(drop)
    page = store.find_jobs(JobFilter(text="lighthouse"))
    assert (_ids(page), page.total) == ([keep], 1)
    assert store.find_jobs(JobFilter(text="storm")).total == 0
    # The next job may be given the deleted one's key (the highest is reused): not its index entry.
    new = store.create_job(task="image", model_id="m", prompt="a quiet harbour", params={}, seed=1)
    assert _ids(store.find_jobs(JobFilter(text="storm"))) == []
    assert _ids(store.find_jobs(JobFilter(text="harbour"))) == [new]


def test_search_survives_a_later_migration_that_copies_the_jobs_table(sqlite_store):
    """SQLite batch migrations copy a table column by column, which renumbers an undeclared rowid;
    the job key the index is keyed by is a declared column, so it is copied like the others."""
    store = sqlite_store
    ids = [store.create_job(task="image", model_id="m", prompt=f"storm number {i}", params={}, seed=1)
           for i in range(6)]
    for victim in ids[:3]:
        store.delete_job(victim)
    with store.engine.connect() as conn:
        conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # as db.migrate does
        with conn.begin():
            with Operations(MigrationContext.configure(conn)).batch_alter_table("jobs", recreate="always") as batch:
                batch.add_column(Column("note", String(10), nullable=True))
    page = store.find_jobs(JobFilter(text="storm"))
    assert (_ids(page), page.total) == (ids[:2:-1], 3)
    assert [j.prompt for j in page.jobs] == ["storm number 5", "storm number 4", "storm number 3"]


def test_a_clock_that_steps_back_keeps_the_newest_job_first(store, monkeypatch):
    first = store.create_job(task="image", model_id="m", prompt="storm one", params={}, seed=1)
    earlier = store.get_job(first).created_at - timedelta(minutes=5)
    monkeypatch.setattr(store_module, "utcnow", lambda: earlier)  # NTP stepped the clock back
    second = store.create_job(task="image", model_id="m", prompt="storm two", params={}, seed=1)
    assert store.get_job(second).created_at >= store.get_job(first).created_at
    assert _ids(store.find_jobs()) == [second, first]
    assert _ids(store.find_jobs(JobFilter(text="storm"))) == [second, first]
    assert _ids(store.find_jobs(JobFilter(text="storm", task="image"))) == [second, first]


def test_a_clock_set_right_after_running_hours_ahead_dates_new_jobs_truly(store, monkeypatch):
    ahead = store.create_job(task="image", model_id="m", prompt="storm ahead", params={}, seed=1)
    right = store.get_job(ahead).created_at - timedelta(hours=2)
    monkeypatch.setattr(store_module, "utcnow", lambda: right)  # a dead RTC battery's clock, then set right
    later = store.create_job(task="image", model_id="m", prompt="storm later", params={}, seed=1)
    assert store.get_job(later).created_at == right  # not frozen at the wrong date for the next two hours
    assert {j.id for j in store.find_jobs(JobFilter(text="storm")).jobs} == {ahead, later}


def _write_like_0004(engine, jobs: list[tuple[str, datetime, str]]) -> None:
    """Rows as the store wrote them at revision 0004: a text-keyed index, rowids in insertion order."""
    with engine.begin() as conn:
        for job_id, created, prompt in jobs:
            naive = created.astimezone(timezone.utc).replace(tzinfo=None)
            conn.execute(text(
                "INSERT INTO jobs (id, created_at, status, task, model_id, prompt, negative_prompt, params, "
                "favorite) VALUES (:id, :created, 'done', 'image', 'm', :prompt, '', '{}', 0)"),
                {"id": job_id, "created": naive, "prompt": prompt})
            conn.execute(text("INSERT INTO jobs_fts (job_id, prompt) VALUES (:id, :prompt)"),
                         {"id": job_id, "prompt": prompt})
        conn.execute(text(
            "INSERT INTO assets (job_id, \"index\", kind, path, mime, bytes, sha256, created_at) "
            "VALUES ('b' , 0, 'image', 'image/b.png', 'image/png', 10, '', :created)"), {"created": naive})


def test_a_history_from_before_the_upgrade_is_found_after_it(tmp_path: Path):
    db = tmp_path / "history.db"
    engine = make_engine(db)
    migrate(engine, "0004")
    now = datetime.now(timezone.utc)
    # Job "c" was written last but is dated first (a clock step): it must be numbered by its date.
    _write_like_0004(engine, [("a", now - timedelta(days=3), "a lighthouse at dawn"),
                              ("b", now - timedelta(days=2), "a lighthouse in a storm"),
                              ("d", now - timedelta(days=1), "red fox"),
                              ("c", now - timedelta(days=4), "an old lighthouse")])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = 'd'"))
        conn.execute(text("DELETE FROM jobs_fts WHERE job_id = 'd'"))
    engine.dispose()

    store = HistoryStore(db)  # upgrades
    try:
        assert current_revision(store.engine) == HEAD_REVISION
        page = store.find_jobs(JobFilter(text="lighthouse"))
        assert (_ids(page), page.total) == (["b", "a", "c"], 3)
        assert _ids(store.find_jobs()) == ["b", "a", "c"]
        assert _ids(store.find_jobs(JobFilter(text="storm", task="image"))) == ["b"]
        assert [a.path for a in store.get_job("b").assets] == ["image/b.png"]
        new = store.create_job(task="image", model_id="m", prompt="a new lighthouse", params={}, seed=1)
        assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == [new, "b", "a", "c"]
        store.delete_job("b")  # its asset row goes with it: the assets still reference the jobs table
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM assets")).scalar_one() == 0
        assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == [new, "a", "c"]

        downgrade(store.engine, "0004")  # and back: the text-keyed index finds them again
        with store.engine.connect() as conn:
            found = conn.execute(text("SELECT job_id FROM jobs_fts WHERE jobs_fts MATCH 'lighthouse' "
                                      "ORDER BY job_id")).scalars().all()
            assert sorted(found) == sorted([new, "a", "c"])
        migrate(store.engine)
        assert _ids(store.find_jobs(JobFilter(text="lighthouse"))) == [new, "a", "c"]
    finally:
        store.close()


def test_a_refused_job_is_searchable_like_any_other(store):
    job_id = store.create_job(task="image", model_id="m", prompt="a lighthouse", params={}, seed=1,
                              refused="too many steps")
    page = store.find_jobs(JobFilter(text="lighthouse", status=JobStatus.FAILED))
    assert (_ids(page), page.total) == ([job_id], 1)
