"""Reuse on record: which earlier sweeps lent a sweep its finished cells, and how many each (a JSON object, sweep id
-> cells), so that every read of the sweep says so, not only the response to its POST.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("sweeps", sa.Column("reused_from", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("sweeps", "reused_from")
