"""The first schema: sweeps, trials and per-epoch metrics.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_sweeps_idempotency_key"),
    )
    op.create_index("ix_sweeps_fingerprint", "sweeps", ["fingerprint"])
    op.create_index("ix_sweeps_status", "sweeps", ["status"])
    op.create_table(
        "trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("sweep_id", sa.Integer(), sa.ForeignKey("sweeps.id", ondelete="CASCADE"), nullable=False),
        sa.Column("cell_id", sa.String(32), nullable=False),
        sa.Column("bundle_id", sa.String(32), nullable=False),
        sa.Column("optimizer", sa.String(16), nullable=False),
        sa.Column("lr", sa.Double(), nullable=False),
        sa.Column("weight_decay", sa.Double(), nullable=False),
        sa.Column("weight_decay_given", sa.Double(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("finished_at", _TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("final_test_error", sa.Double(), nullable=True),
        sa.Column("final_train_error", sa.Double(), nullable=True),
        sa.Column("final_test_loss", sa.Double(), nullable=True),
        sa.Column("final_train_loss", sa.Double(), nullable=True),
        sa.Column("wall_time_s", sa.Double(), nullable=True),
        sa.Column("epochs_done", sa.Integer(), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("git_sha", sa.String(64), nullable=True),
        sa.Column("package_versions", sa.JSON(), nullable=True),
        sa.Column("device", sa.String(200), nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.UniqueConstraint("sweep_id", "cell_id", name="uq_trials_sweep_cell"),
    )
    op.create_index("ix_trials_cell_id", "trials", ["cell_id"])
    op.create_table(
        "epochs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("trial_id", sa.Integer(), sa.ForeignKey("trials.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_loss", sa.Double(), nullable=True),
        sa.Column("train_error", sa.Double(), nullable=True),
        sa.Column("test_loss", sa.Double(), nullable=True),
        sa.Column("test_error", sa.Double(), nullable=True),
        sa.Column("eta", sa.Double(), nullable=True),
        sa.Column("wall_time_s", sa.Double(), nullable=True),
        sa.UniqueConstraint("trial_id", "attempt", "epoch", name="uq_epochs_trial_attempt_epoch"),
    )


def downgrade() -> None:
    op.drop_table("epochs")
    op.drop_table("trials")
    op.drop_table("sweeps")
