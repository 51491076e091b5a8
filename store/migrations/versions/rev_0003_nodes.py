"""Several nodes share rooms: the registry of live nodes, each room's home
node (with a lease its node renews) and the settings every node shares (the
hand-off key).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("started", sa.Double, nullable=False),
        sa.Column("heartbeat", sa.Double, nullable=False),
        sa.Column("calls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rooms", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "room_homes",
        sa.Column("room", sa.Text, primary_key=True),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("lease_until", sa.Double, nullable=False),
    )
    op.create_table(
        "cluster",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
