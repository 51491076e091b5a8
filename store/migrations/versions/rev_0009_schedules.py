"""Scheduled dial-out: the `schedules` table (the room, the time, the numbers,
who claimed it, and each number's outcome).

Revision ID: 0009
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# SQLite's rowid, PostgreSQL's 64-bit identity (as store/schema.py's ID).
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("room", sa.Text, nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("numbers", sa.Text, nullable=False),
        sa.Column("moderator", sa.Text),
        sa.Column("moderator_first", sa.Integer, nullable=False, server_default="0"),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("node", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("started_at", sa.Double),
        sa.Column("finished_at", sa.Double),
        sa.Column("calls", sa.Text, nullable=False, server_default="[]"),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("schedules_status_at", "schedules", ["status", "at"])
