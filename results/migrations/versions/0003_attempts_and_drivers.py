"""Attempts and sweep drivers: one row per claim of a trial (where it ran, how it ended), and the driver that holds a
sweep with the lease it renews.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.UniqueConstraint("trial_id", "attempt", name="uq_attempts_trial_attempt"),
    )
    # Attempts of trials claimed before this migration are not known one by one: their count stays on the trial.
    with op.batch_alter_table("sweeps") as batch:
        batch.add_column(sa.Column("driver", sa.String(200), nullable=True))
        batch.add_column(sa.Column("driver_lease_expires_at", _TS, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sweeps") as batch:
        batch.drop_column("driver_lease_expires_at")
        batch.drop_column("driver")
    op.drop_table("attempts")
