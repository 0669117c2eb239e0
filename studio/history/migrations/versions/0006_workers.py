"""Several workers on one queue: who ran a job and where, worker leases, cancel and pause that reach every host.

- jobs.worker / jobs.device: the worker that claimed the job and the device (or device group) it ran on.
- jobs.attempts: how many times the job was claimed (a job lost with its worker is re-queued at most once).
- jobs.cancel_requested: a cancel asked for by a process that does not run the job; the worker that does
  sees it at its next heartbeat (or at once, on PostgreSQL, through NOTIFY) and stops at the next step.
- workers: one row per running worker (a device of a `studio serve` or `studio worker` process, on any
  host), its heartbeat and what it holds; a row whose heartbeat is older than the lease is a dead worker,
  and the others end (or re-queue) the job it had.
- queue_state: queue-wide switches by name; `paused` stops every worker on every host claiming jobs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:20:00
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("worker", sa.String(200), nullable=True))
        batch.add_column(sa.Column("device", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("host_id", sa.String(64), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_started", sa.Float(), nullable=True),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("total_steps", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("load", sa.Float(), nullable=False, server_default="0"),
        sa.Column("available", sa.JSON(), nullable=True),
        sa.Column("requeue_lost", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_table(
        "queue_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_queue_state"),
    )


def downgrade() -> None:
    op.drop_table("queue_state")
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("attempts")
        batch.drop_column("cancel_requested")
        batch.drop_column("device")
        batch.drop_column("worker")
