"""Shared by several nodes: id blocks for sessions, the PIN guard's wrong PINs,
and an index for the Call-ID lookups of extension calls.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "id_blocks",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("next_id", sa.BigInteger, nullable=False),
    )
    # Sessions numbered by an older release go on from their highest id.
    op.execute(
        "INSERT INTO id_blocks (name, next_id) "
        "SELECT 'conference_sessions', COALESCE(MAX(id), 0) + 1 FROM conference_sessions"
    )
    op.create_table(
        "guard_wrong",
        sa.Column("id", ID, primary_key=True),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("number", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("run", sa.Text, nullable=False),
    )
    op.create_index("guard_wrong_at", "guard_wrong", ["at"])
    op.create_index("calls_sip_call_id", "calls", ["sip_call_id"])
