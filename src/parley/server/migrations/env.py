"""Alembic environment: always run programmatically through `parley.server.db.migrate()`.

The caller hands over a live (sync-facing) connection in `config.attributes["connection"]`, so the
same code works for aiosqlite and asyncpg engines.
"""

from __future__ import annotations

from alembic import context

from parley.server.db import Base

target_metadata = Base.metadata


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the Parley migrations through parley.server.db.migrate()")
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
