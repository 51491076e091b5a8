"""Room recordings: one row per recording (room, department, who started and
stopped it, its folder under state_dir/recordings, its files and sizes), for
`ponte report recordings`, the console's downloads and the retention.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("room", sa.Text, nullable=False),
        sa.Column("department", sa.Text),
        sa.Column("node", sa.Text),
        sa.Column("folder", sa.Text, nullable=False, unique=True),
        sa.Column("started_at", sa.Text, nullable=False),
        sa.Column("started_ts", sa.Double, nullable=False),
        sa.Column("ended_at", sa.Text),
        sa.Column("ended_ts", sa.Double),
        sa.Column("seconds", sa.Double),
        sa.Column("started_by", sa.Text),
        sa.Column("stopped_by", sa.Text),
        sa.Column("files", sa.Text, nullable=False, server_default="[]"),
        sa.Column("bytes", sa.BigInteger),
        sa.Column("dropped_frames", sa.Integer),
    )
    op.create_index("idx_recordings_started_ts", "recordings", ["started_ts"])
