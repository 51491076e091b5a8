"""What became of each alert's webhook: "delivered after N tries", or
"failed after N tries: why" once the retries with backoff ran out, for
`ponte report alerts` (column webhook). Empty when no webhook was set.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("webhook", sa.Text, nullable=True))
