"""Gallery and presets: favorites, paging indexes, full-text search over prompts, user presets.

- jobs.favorite, and (column, created_at) indexes for each gallery filter; they replace the
  single-column task/status/model indexes, which their leading column already covers.
- jobs_fts: an FTS5 table (trigram tokenizer, so words inside Chinese or Japanese prompts and any
  substring of three or more characters are found) over each job's prompt, which for compositional
  and anagram jobs already holds every caption and reading. The store writes it in the same
  transaction as the job row (triggers would be dropped silently by any later batch migration
  that recreates `jobs`); this migration indexes the jobs that exist already.
- user_presets: presets and style templates the user saved or imported.

On PostgreSQL there is no jobs_fts: the pg_trgm extension's GIN trigram index on jobs.prompt
(ix_jobs_prompt_trgm) serves ILIKE '%word%' for each search word (search.py). That keeps the meaning of
SQLite's trigram FTS5 search, a case-insensitive substring per word or phrase, CJK included; tsvector
search would stem words and miss substrings, changing what the gallery's search finds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 00:00:02
"""

from __future__ import annotations

import sqlite3
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

FILTERS = {"task": "task", "model": "model_id", "status": "status", "favorite": "favorite"}
PROMPT_TRGM = "ix_jobs_prompt_trgm"


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _create_trigram_index() -> None:
    """pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it. A savepoint, so
    that a refusal can be reported in words instead of as an aborted transaction."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as err:
        raise RuntimeError("the history needs PostgreSQL's pg_trgm extension (for full-text search): run "
                           "CREATE EXTENSION pg_trgm in this database as its owner or a superuser, or install "
                           f"the server's contrib package ({err.orig})") from None
    op.create_index(PROMPT_TRGM, "jobs", ["prompt"], postgresql_using="gin", postgresql_ops={"prompt": "gin_trgm_ops"})


def upgrade() -> None:
    if not _postgres() and sqlite3.sqlite_version_info < (3, 34, 0):
        raise RuntimeError(f"the history needs SQLite 3.34 or newer (for full-text search); this Python has "
                           f"{sqlite3.sqlite_version}. Use a newer Python build, or install pysqlite3.")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("favorite", sa.Boolean(), nullable=False, server_default="0"))
    for column in ("status", "task", "model_id"):
        op.drop_index(f"ix_jobs_{column}", table_name="jobs")
    for name, column in FILTERS.items():
        op.create_index(f"ix_jobs_{name}_created", "jobs", [column, "created_at"])
    if _postgres():
        _create_trigram_index()
    else:
        op.execute("CREATE VIRTUAL TABLE jobs_fts USING fts5(job_id UNINDEXED, prompt, tokenize='trigram')")
        op.execute("INSERT INTO jobs_fts (job_id, prompt) SELECT id, prompt FROM jobs")

    op.create_table(
        "user_presets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_user_presets"),
        sa.UniqueConstraint("kind", "modality", "name", name="uq_user_presets_kind_modality_name"),
    )
    op.create_index("ix_user_presets_kind", "user_presets", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_user_presets_kind", table_name="user_presets")
    op.drop_table("user_presets")
    if _postgres():
        # The extension stays: other databases' objects or users may rely on it, and it costs nothing.
        op.drop_index(PROMPT_TRGM, table_name="jobs")
    else:
        op.execute("DROP TABLE jobs_fts")
    for name in FILTERS:
        op.drop_index(f"ix_jobs_{name}_created", table_name="jobs")
    for column in ("status", "task", "model_id"):
        op.create_index(f"ix_jobs_{column}", "jobs", [column])
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("favorite")
