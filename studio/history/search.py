"""What the gallery can ask of the history: a job's status, and filters with full-text search.

`JobFilter` is the question; `filter_conditions` turns it into SQL conditions on the jobs table;
`job_model_ids` is which models there are jobs of (what the model filter can offer). The
search box's text goes to the `jobs_fts` FTS5 index (trigram tokenizer: words inside Chinese or
Japanese prompts are found too) as quoted phrases, so no user text is ever read as query syntax;
words too short for the index are matched with LIKE.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, column, select, table, text
from sqlalchemy.orm import Session

from .tables import JOBS_FTS, Job

# FTS5's trigram tokenizer indexes 3-character substrings: shorter search words can't use the index.
_MIN_FTS_TERM = 3
_RE_TERM = re.compile(r'"([^"]*)"|(\S+)')
_RE_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SEARCH_TERMS = 16
MAX_SEARCH_CHARS = 1000


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


def _text_conditions(text_query: str) -> list[ColumnElement[bool]]:
    """SQL conditions for a search box: FTS5 for terms it can index, LIKE on the prompt for the rest."""
    conditions: list[ColumnElement[bool]] = []
    indexed = [t for t in search_terms(text_query) if len(t) >= _MIN_FTS_TERM]
    if indexed:
        # Every term becomes a quoted FTS5 phrase (quotes doubled), so no user text is read as query syntax.
        match = " AND ".join('"' + t.replace('"', '""') + '"' for t in indexed)
        fts = table(JOBS_FTS, column("job_id"))
        hits = select(fts.c.job_id).where(text(f"{JOBS_FTS} MATCH :match").bindparams(match=match))
        conditions.append(Job.id.in_(hits))
    for term in search_terms(text_query):
        if len(term) < _MIN_FTS_TERM:
            escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(Job.prompt.like(f"%{escaped}%", escape="\\"))
    return conditions


def filter_conditions(filters: JobFilter) -> list[ColumnElement[bool]]:
    conditions = _text_conditions(filters.text)
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


def job_model_ids(engine: Engine) -> set[str]:
    """The model of every job in the history (the (model_id, created_at) index answers it)."""
    with Session(engine) as s:
        return set(s.scalars(select(Job.model_id).distinct()))
