"""Indexes for the store's hot queries: a sweep's trials by status (claims, counts, resume) and running trials by
lease expiry (the reaper).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trials_sweep_status", "trials", ["sweep_id", "status"])
    op.create_index("ix_trials_status_lease", "trials", ["status", "lease_expires_at"])


def downgrade() -> None:
    op.drop_index("ix_trials_status_lease", table_name="trials")
    op.drop_index("ix_trials_sweep_status", table_name="trials")
