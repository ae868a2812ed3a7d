"""A call's owner: the server process that holds it (shared mode).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("owner", sa.String(128), nullable=True))
        batch.create_index("ix_calls_status_owner", ["status", "owner"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_status_owner")
        batch.drop_column("owner")
