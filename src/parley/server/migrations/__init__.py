"""Alembic migrations of the Parley server's database (run by `parley.server.db.migrate`)."""
