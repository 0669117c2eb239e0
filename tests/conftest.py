"""Shared fixtures: an isolated data folder per test, tiny models built once per session, no network."""

from __future__ import annotations

import copy
import gc
import os

# Nothing in the test suite may reach a model hub; these make any attempt fail loudly instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402

import pg  # noqa: E402

# Every Studio reads the shipped preset files with yaml.safe_load (pure Python; the model cards go through
# libyaml's loader, zoo/cards.py) and hundreds of tests make one. The
# same text is parsed once and each caller gets its own deep copy of the result: the same parser and the
# same values (anchors still shared within a document), bad YAML still raises (failures are not kept).
_safe_load = yaml.safe_load
_parsed: dict[str, object] = {}


def _safe_load_once(stream):
    if not isinstance(stream, str) or len(_parsed) > 4000:
        return _safe_load(stream)
    if stream not in _parsed:
        _parsed[stream] = _safe_load(stream)
    return copy.deepcopy(_parsed[stream])


yaml.safe_load = _safe_load_once

from studio.services import Studio  # noqa: E402
from studio.settings import Settings  # noqa: E402
from studio.zoo.builtin import builders, ensure_builtin  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _frozen_heap():
    """Collect, then freeze what is still alive, at the start of each test module: the imported libraries
    (torch, gradio, diffusers: ~500k objects) and the session's fixtures. Every Studio.close and model
    eviction calls gc.collect(), which otherwise walks that whole heap each time (0.2-1 s a call on 2
    cores); frozen objects are skipped. What a test makes after this point is collected as before (the
    previous module's fixtures are already torn down when the next module's first test is set up)."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()  # what died meanwhile in a cycle is collected at the next module's start


@pytest.fixture(scope="session")
def pg_admin_url():
    """The admin URL of the session's PostgreSQL server (tests/pg.py); skips (or fails, with
    STUDIO_REQUIRE_PG=1) where there is none."""
    yield from pg.pg_server()


@pytest.fixture
def pg_url(pg_admin_url: str):
    """A fresh, empty PostgreSQL database for this test: postgresql://user:pass@127.0.0.1:PORT/dbname."""
    yield from pg.fresh_pg_url(pg_admin_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):
    """The history database of a test run on both backends: a SQLite file under tmp_path, or a fresh
    PostgreSQL database's URL (what HistoryStore and make_engine take)."""
    if request.param == "sqlite":
        yield tmp_path / "history.db"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face cache holding the built-in tiny models (built once per test session)."""
    cache = tmp_path_factory.mktemp("hf-cache")
    for name in builders():
        ensure_builtin(name, cache)
    return cache


@pytest.fixture
def settings(tmp_path: Path, model_cache: Path) -> Settings:
    return Settings.load(env={}, home=tmp_path / "home", model_cache=model_cache)


@pytest.fixture
def studio(settings: Settings):
    with Studio(settings) as running:
        yield running

