"""Installed-model records for the model manager.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 00:00:00
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

# INTEGER on SQLite (64-bit there anyway), BIGINT on PostgreSQL: a model is often over 2 GiB.
BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "installed_models",
        sa.Column("card_id", sa.String(64), nullable=False),
        sa.Column("repo_id", sa.String(200), nullable=False),
        sa.Column("revision", sa.String(200), nullable=False),
        sa.Column("commit", sa.String(40), nullable=True),
        sa.Column("local_path", sa.String(1024), nullable=True),
        sa.Column("bytes", BIG_INT, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("card_id", name=op.f("pk_installed_models")),
    )
    op.create_index(op.f("ix_installed_models_status"), "installed_models", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_installed_models_status"), table_name="installed_models")
    op.drop_table("installed_models")
