"""Baseline: the tables as releases before migrations made them.

On a new database it creates them. On a file from those releases (tables,
no alembic_version) it creates only what is missing and adds the columns
added over time, so adopting an old file and starting afresh are one path.
Frozen: later changes go in later revisions, never here.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
T, F, N, B = sa.Text, sa.Double, sa.Integer, sa.BigInteger


def _tables() -> sa.MetaData:
    m = sa.MetaData()
    sa.Table(
        "audit", m, sa.Column("id", ID, primary_key=True),
        sa.Column("at", T, nullable=False), sa.Column("by", T, nullable=False),
        sa.Column("unix_user", T), sa.Column("source", T, nullable=False),
        sa.Column("object", T, nullable=False), sa.Column("action", T, nullable=False),
        sa.Column("changes", T, nullable=False, server_default="{}"),
        sa.Column("summary", T, nullable=False, server_default=""),
        sa.Index("audit_at", "at"),
    )  # fmt: skip
    sa.Table(
        "restores", m, sa.Column("id", ID, primary_key=True),
        sa.Column("at", T, nullable=False), sa.Column("by", T, nullable=False),
        sa.Column("archive", T, nullable=False), sa.Column("parts", T, nullable=False),
        sa.Column("status", T, nullable=False),
        sa.Column("detail", T, nullable=False, server_default=""),
    )  # fmt: skip
    sa.Table(
        "calls", m, sa.Column("id", ID, primary_key=True), sa.Column("leg", B),
        sa.Column("origin", T), sa.Column("destination", T), sa.Column("call_type", T),
        sa.Column("started_at", T, nullable=False), sa.Column("answered_at", T),
        sa.Column("ended_at", T, nullable=False),
        sa.Column("duration", F, nullable=False, server_default="0"),
        sa.Column("disposition", T, nullable=False), sa.Column("sip_code", N),
        sa.Column("trunk", T), sa.Column("line", T), sa.Column("profile_rule", T),
        sa.Column("cut_at_limit", N, nullable=False, server_default="0"),
        *_CALL_COLUMNS(),
        sa.Index("calls_started", "started_at"),
    )  # fmt: skip
    sa.Table(
        "live_calls", m, sa.Column("node", T, nullable=False),
        sa.Column("leg", B, nullable=False), sa.Column("record", T, nullable=False),
        sa.Column("checkpoint", F, nullable=False), sa.PrimaryKeyConstraint("node", "leg"),
    )  # fmt: skip
    sa.Table(
        "marks", m, sa.Column("name", T, primary_key=True),
        sa.Column("value", B, nullable=False),
    )  # fmt: skip
    sa.Table(
        "usage", m, sa.Column("key", T, nullable=False), sa.Column("cycle", T, nullable=False),
        sa.Column("call_type", T, nullable=False),
        sa.Column("seconds", F, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("key", "cycle", "call_type"),
    )  # fmt: skip
    sa.Table(
        "alerts", m, sa.Column("id", ID, primary_key=True),
        sa.Column("key", T, nullable=False), sa.Column("cycle", T, nullable=False),
        sa.Column("limit_name", T, nullable=False), sa.Column("threshold", N, nullable=False),
        sa.Column("line", T), sa.Column("at", T, nullable=False),
        sa.Column("used_seconds", F), sa.Column("limit_seconds", F),
        sa.UniqueConstraint("key", "cycle", "limit_name", "threshold"),
    )  # fmt: skip
    sa.Table(
        "conference_sessions", m, sa.Column("id", ID, primary_key=True),
        sa.Column("room", T), sa.Column("started_at", T), sa.Column("ended_at", T),
        sa.Column("started_ts", F), sa.Column("ended_ts", F), sa.Column("legs", N),
        sa.Column("participant_seconds", F), sa.Column("billed_minutes", N),
        sa.Column("peak_members", N), sa.Column("ended_by", T),
        sa.Index("idx_conference_sessions_room_started_ts", "room", "started_ts"),
    )  # fmt: skip
    sa.Table(
        "conference_legs", m, sa.Column("id", ID, primary_key=True),
        sa.Column("session_id", B, sa.ForeignKey("conference_sessions.id")),
        sa.Column("leg", B), sa.Column("caller", T), sa.Column("role", T),
        sa.Column("name_file", T), sa.Column("joined_at", T), sa.Column("left_at", T),
        sa.Column("seconds", F), sa.Column("billed_minutes", N), sa.Column("ended_by", T),
        sa.Column("joined_by", T),
        sa.Index("idx_conference_legs_session_id", "session_id"),
    )  # fmt: skip
    sa.Table(
        "conference_live", m, sa.Column("node", T, nullable=False),
        sa.Column("session_id", B), sa.Column("leg", B, nullable=False),
        sa.Column("caller", T), sa.Column("role", T), sa.Column("name_file", T),
        sa.Column("joined", F), sa.Column("joined_by", T), sa.Column("checkpoint", F),
        sa.PrimaryKeyConstraint("node", "leg"),
    )  # fmt: skip
    sa.Table(
        "pin_known_callers", m, sa.Column("access_number", T, nullable=False),
        sa.Column("caller", T, nullable=False), sa.Column("last_ok_at", T, nullable=False),
        sa.PrimaryKeyConstraint("access_number", "caller"),
    )  # fmt: skip
    return m


def _CALL_COLUMNS() -> list[sa.Column[object]]:  # noqa: N802 - as the old module named them
    # Added to `calls` after it first shipped (network quality, Call-ID, who ended it).
    return [
        sa.Column(name, F if name not in ("sip_call_id", "ended_by") else T)
        for name in (
            "loss_in", "loss_out", "jitter_in", "jitter_out", "rtt_ms", "mos",
            "sip_call_id", "ended_by",
        )
    ]  # fmt: skip


# Columns an old file may lack, per table.
def _session_columns() -> list[sa.Column[object]]:
    return [sa.Column("ended_by", T)]


ADDED = {"calls": _CALL_COLUMNS, "conference_sessions": _session_columns}


def upgrade() -> None:
    bind = op.get_bind()
    m = _tables()
    have = set(sa.inspect(bind).get_table_names())
    m.create_all(bind, checkfirst=True)
    inspector = sa.inspect(bind)
    for table, columns in ADDED.items():
        if table not in have:
            continue
        present = {c["name"] for c in inspector.get_columns(table)}
        for column in columns():
            if column.name not in present:
                op.add_column(table, column)
