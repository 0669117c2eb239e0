"""What the gallery can ask of the history: a job's status, and filters with full-text search.

`JobFilter` is the question; `page_query` turns it into the one SQL statement that reads a page of
it with its total; `job_model_ids` is which models there are jobs of (what the model filter can
offer). On SQLite the search box's text goes to the `jobs_fts` FTS5 index (trigram tokenizer: words
inside Chinese or Japanese prompts are found too) as quoted phrases, so no user text is ever read as
query syntax; words too short for the index are matched with LIKE. On PostgreSQL every word is matched
with ILIKE '%word%' (escaped), which the pg_trgm GIN index on jobs.prompt serves for words of three
characters or more: the same meaning (each word or phrase a case-insensitive substring), so the same
`JobFilter` finds the same jobs on both.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, column, func, select, table, text
from sqlalchemy.orm import Session

from .tables import JOBS_FTS, Job

# FTS5's trigram tokenizer indexes 3-character substrings: shorter search words can't use the index.
_MIN_FTS_TERM = 3
_RE_TERM = re.compile(r'"([^"]*)"|(\S+)')
_RE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SEARCH_TERMS = 16
MAX_SEARCH_CHARS = 1000
_INDEX_FIRST_SHARE = 5  # count along the filter's index when the words are in 1/5 of the jobs or more
_PROBE = 256  # matches read to tell how common the words are


class JobStatus(str, enum.Enum):
    """Where a job is in its life; stored as the value string."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class JobFilter:
    """What the gallery asks for. `text` is searched in prompts (every caption and reading included):
    each word, or "quoted phrase", must appear somewhere in the prompt, in any case."""

    text: str = ""
    task: str | None = None
    model_id: str | None = None
    status: JobStatus | str | None = None
    favorites: bool = False
    since: datetime | None = None  # created at or after (aware)
    until: datetime | None = None  # created before (aware)


def search_terms(text_query: str) -> list[str]:
    """The words and "quoted phrases" of a search box: blanks and control characters dropped, each
    term once, at most MAX_SEARCH_TERMS of them (a search box is not a place for a novel)."""
    cleaned = _RE_CONTROL.sub(" ", text_query[:MAX_SEARCH_CHARS])
    terms = (quoted if quoted else bare for quoted, bare in _RE_TERM.findall(cleaned))
    return list(dict.fromkeys(t.strip() for t in terms if t and t.strip()))[:MAX_SEARCH_TERMS]


def _fts_match(terms: list[str]) -> ColumnElement[bool]:
    """`jobs_fts MATCH` every term as a quoted FTS5 phrase (quotes doubled), so no user text is read
    as query syntax."""
    match = " AND ".join('"' + t.replace('"', '""') + '"' for t in terms)
    return text(f"{JOBS_FTS} MATCH :match").bindparams(match=match)


def _like(term: str, *, ilike: bool = False) -> ColumnElement[bool]:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if ilike:
        return Job.prompt.ilike(f"%{escaped}%", escape="\\")
    return Job.prompt.like(f"%{escaped}%", escape="\\")


def filter_conditions(filters: JobFilter) -> list[ColumnElement[bool]]:
    """The conditions on the jobs table alone: every filter, and LIKE for search words too short for
    the index (the words the index can take are `page_query`'s)."""
    short = [_like(t) for t in search_terms(filters.text) if len(t) < _MIN_FTS_TERM]
    return short + _column_filters(filters)


def _column_filters(filters: JobFilter) -> list[ColumnElement[bool]]:
    """Every filter but the search words."""
    conditions: list[ColumnElement[bool]] = []
    if filters.task:
        conditions.append(Job.task == filters.task)
    if filters.model_id:
        conditions.append(Job.model_id == filters.model_id)
    if filters.status:
        conditions.append(Job.status == JobStatus(filters.status).value)
    if filters.favorites:
        conditions.append(Job.favorite.is_(True))
    if filters.since is not None:
        conditions.append(Job.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(Job.created_at < filters.until)
    return conditions


def _equality_filter(filters: JobFilter) -> bool:
    """Whether a (column, created_at) index holds exactly the jobs one of the filters keeps."""
    return bool(filters.task or filters.model_id or filters.status or filters.favorites)


def count_from_filter_index(conn: Connection, filters: JobFilter) -> bool:
    """Whether the search words are common enough that a filtered total is cheaper counted along the
    filter's index (each entry tested against the set of matches) than by fetching every match.

    Fetching a match costs a primary-key lookup, several times an index entry's test, so the index wins
    once the words are in about a fifth of the jobs or more (bench/gallery.py: 'storm' in audio jobs).
    How common they are is read off the newest matches: the index walks them newest first, so the
    _PROBE-th newest match says how many of the newest jobs hold the words, after reading at most _PROBE
    entries (fts5vocab would say it exactly, but by walking each trigram's whole list: slower than the
    search). Fewer matches than that: the words are rare, and counting them is a few lookups.
    On PostgreSQL (no jobs_fts; its planner picks the way to count) always False."""
    if conn.dialect.name != "sqlite":
        return False
    indexed = [t for t in search_terms(filters.text) if len(t) >= _MIN_FTS_TERM]
    if not indexed or not _equality_filter(filters):
        return False
    fts = table(JOBS_FTS, column("rowid"))
    probe = select(fts.c.rowid).where(_fts_match(indexed)).order_by(fts.c.rowid.desc()).offset(_PROBE - 1).limit(1)
    kth_newest = conn.execute(probe).scalar()
    if kth_newest is None:
        return False
    newest = conn.execute(select(func.max(Job.seq))).scalar_one()
    return newest - kth_newest + 1 <= _PROBE * _INDEX_FIRST_SHARE


def page_query(filters: JobFilter, limit: int, offset: int, *, common: bool = False, dialect: str = "sqlite",
               ) -> tuple[Select[Any], Select[tuple[int]]]:
    """One gallery page as one statement: rows of the jobs table's columns and `total` (how many jobs
    match in all), newest first; and the count alone, for a page past the end (no row to carry it).

    Without search words the (filter column, created_at) indexes walk newest first and stop after the
    page. With them, FTS5 drives the page: it reads its matches by rowid, which is `seq`, highest first
    (newest first, see tables.Job), joins each to its job by the primary key and stops after the page,
    never collecting and sorting every match. The total is a scalar subquery, run once per statement,
    that visits as few rows as it can: the index alone when nothing else filters (a word in most
    prompts is then one walk of its doclist); with a filter and `common` words (see
    `count_from_filter_index`), that filter's index, each entry looked up in the set of matches;
    otherwise each match, fetched by its primary key to test the filters.

    `dialect` is the connection's (conn.dialect.name). On PostgreSQL every search word is an ILIKE
    condition on jobs.prompt (its GIN trigram index serves those of 3+ characters) among the filters,
    and the page is newest first like a page without words; the planner chooses the indexes.
    """
    jobs = Job.__table__
    if dialect == "postgresql":
        conditions = [_like(t, ilike=True) for t in search_terms(filters.text)] + _column_filters(filters)
        indexed: list[str] = []
    else:
        conditions = filter_conditions(filters)
        indexed = [t for t in search_terms(filters.text) if len(t) >= _MIN_FTS_TERM]
    if not indexed:
        # correlate(None): the count is its own query over jobs, not a per-row reference to the outer one.
        count = select(func.count()).select_from(Job).where(*conditions).correlate(None)
        page = select(*jobs.c, count.scalar_subquery().label("total")).where(*conditions).order_by(
            Job.created_at.desc(), Job.seq.desc())  # seq breaks ties within one microsecond
        return page.limit(limit).offset(offset), count
    fts = table(JOBS_FTS, column("rowid"))
    match = _fts_match(indexed)
    if not conditions:
        hits = select(func.count()).select_from(fts).where(match)
    elif common:
        # "seq + 0", not seq: SQLite must not turn the IN into primary-key lookups of every match, but
        # walk the filter's index and test each entry against the matches (one in-memory index of them).
        matching = select(fts.c.rowid).where(match)
        hits = select(func.count()).select_from(Job).where(*conditions, (Job.seq + 0).in_(matching))
    else:
        hits = select(func.count()).select_from(fts).join(Job, Job.seq == fts.c.rowid).where(match, *conditions)
    hits = hits.correlate(None)
    page = (select(*jobs.c, hits.scalar_subquery().label("total")).select_from(fts).join(jobs, Job.seq == fts.c.rowid)
            .where(match, *conditions).order_by(fts.c.rowid.desc()))
    return page.limit(limit).offset(offset), hits


def job_model_ids(engine: Engine) -> set[str]:
    """The model of every job in the history (the (model_id, created_at) index answers it)."""
    with Session(engine) as s:
        return set(s.scalars(select(Job.model_id).distinct()))
