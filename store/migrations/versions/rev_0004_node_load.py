"""Each node's load in the registry: its legs (SIP and browser, internal
hand-off legs included) besides its calls, and the CPU its process used
over the last heartbeat (percent of one core), for `ponte status`'s cluster
view and the console's Nodes page.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("legs", sa.Integer, nullable=False, server_default="0"))
    op.add_column("nodes", sa.Column("cpu", sa.Double, nullable=False, server_default="0"))
