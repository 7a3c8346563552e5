"""Alembic environment for the results store. ``results.Storage`` runs it in code with the connection in
``config.attributes["connection"]``; there is no alembic.ini and no offline (SQL script) mode."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from results._tables import Base

connection: Connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
