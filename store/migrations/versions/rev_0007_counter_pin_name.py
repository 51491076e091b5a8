"""Individual counter-PINs: each conference leg records the name of the
moderator's own counter-PIN that let it in (the live row too, so a crash
bills it as well), for the audit and `ponte report participants`.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("conference_legs", sa.Column("counter_pin_name", sa.Text, nullable=True))
    op.add_column("conference_live", sa.Column("counter_pin_name", sa.Text, nullable=True))
