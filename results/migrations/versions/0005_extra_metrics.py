"""A trainer plugin's metrics beyond the built-in columns: per epoch (``epochs.extra``) and of a trial's last epoch
(``trials.final_extra``), as JSON objects of metric name -> number.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("epochs", sa.Column("extra", sa.JSON(), nullable=True))
    op.add_column("trials", sa.Column("final_extra", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("trials", "final_extra")
    op.drop_column("epochs", "extra")
