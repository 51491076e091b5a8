"""Every table of ponte's records database, as the app uses it today.

The migrations in `store/migrations/versions` build this shape on a new
database and bring an older one up to it; a test checks that the two agree.
Kamailio's own tables (subscriber, version) live beside these on PostgreSQL
and are not described here: Kamailio owns them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)

# SQLite only makes `INTEGER PRIMARY KEY` an auto-increment rowid; PostgreSQL
# wants a 64-bit identity for ids that outlive many years of calls.
ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

audit = Table(
    "audit",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("at", Text, nullable=False),
    Column("by", Text, nullable=False),
    Column("unix_user", Text),
    Column("source", Text, nullable=False),
    Column("object", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("changes", Text, nullable=False, server_default="{}"),
    Column("summary", Text, nullable=False, server_default=""),
    Index("audit_at", "at"),
)

restores = Table(
    "restores",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("at", Text, nullable=False),
    Column("by", Text, nullable=False),
    Column("archive", Text, nullable=False),
    Column("parts", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
)

calls = Table(
    "calls",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("leg", BigInteger),
    Column("origin", Text),
    Column("destination", Text),
    Column("call_type", Text),
    Column("started_at", Text, nullable=False),
    Column("answered_at", Text),
    Column("ended_at", Text, nullable=False),
    Column("duration", Double, nullable=False, server_default="0"),
    Column("disposition", Text, nullable=False),
    Column("sip_code", Integer),
    Column("trunk", Text),
    Column("line", Text),
    Column("profile_rule", Text),
    Column("cut_at_limit", Integer, nullable=False, server_default="0"),
    # Network quality, as rtpengine measured it: "in" reached the appliance
    # from the phone, "out" reached the phone from us (its RTCP reports).
    Column("loss_in", Double),
    Column("loss_out", Double),
    Column("jitter_in", Double),
    Column("jitter_out", Double),
    Column("rtt_ms", Double),
    Column("mos", Double),
    Column("sip_call_id", Text),
    # Who ended it: "caller", "moderator_exit", "admin"... or "crash".
    Column("ended_by", Text),
    Index("calls_started", "started_at"),
    Index("calls_sip_call_id", "sip_call_id"),
)

# Answered calls still going: their history row as of the last checkpoint,
# per app-server node. A crash leaves them here; start-up closes them.
live_calls = Table(
    "live_calls",
    metadata,
    Column("node", Text, nullable=False),
    Column("leg", BigInteger, nullable=False),
    Column("record", Text, nullable=False),
    Column("checkpoint", Double, nullable=False),
    PrimaryKeyConstraint("node", "leg"),
)

# Watermarks of what was read from other programs' tables (Kamailio's acc).
marks = Table(
    "marks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

# Seconds used per line (or department pool), billing cycle and call type.
usage = Table(
    "usage",
    metadata,
    Column("key", Text, nullable=False),
    Column("cycle", Text, nullable=False),
    Column("call_type", Text, nullable=False),
    Column("seconds", Double, nullable=False, server_default="0"),
    PrimaryKeyConstraint("key", "cycle", "call_type"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
    Column("cycle", Text, nullable=False),
    Column("limit_name", Text, nullable=False),
    Column("threshold", Integer, nullable=False),
    Column("line", Text),
    Column("at", Text, nullable=False),
    Column("used_seconds", Double),
    Column("limit_seconds", Double),
    # The webhook's outcome (retried with backoff): "delivered after N
    # tries" or "failed after N tries: why"; NULL without a webhook.
    Column("webhook", Text),
    UniqueConstraint("key", "cycle", "limit_name", "threshold"),
)

conference_sessions = Table(
    "conference_sessions",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("room", Text),
    Column("started_at", Text),
    Column("ended_at", Text),
    Column("started_ts", Double),
    Column("ended_ts", Double),
    Column("legs", Integer),
    Column("participant_seconds", Double),
    Column("billed_minutes", Integer),
    Column("peak_members", Integer),
    Column("ended_by", Text),
    Index("idx_conference_sessions_room_started_ts", "room", "started_ts"),
)

conference_legs = Table(
    "conference_legs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("session_id", BigInteger, ForeignKey("conference_sessions.id")),
    Column("leg", BigInteger),
    Column("caller", Text),
    Column("role", Text),
    Column("name_file", Text),
    Column("joined_at", Text),
    Column("left_at", Text),
    Column("seconds", Double),
    Column("billed_minutes", Integer),
    Column("ended_by", Text),
    Column("joined_by", Text),
    # The name of the individual counter-PIN a moderator keyed (never the PIN).
    Column("counter_pin_name", Text),
    Index("idx_conference_legs_session_id", "session_id"),
)

# Room recordings (ponte/recordings.py): one row per start, its files as JSON
# ([{name, bytes, seconds, dropped_frames, caller?, leg?}]) once complete.
recordings = Table(
    "recordings",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("room", Text, nullable=False),
    Column("department", Text),
    Column("node", Text),
    Column("folder", Text, nullable=False, unique=True),
    Column("started_at", Text, nullable=False),
    Column("started_ts", Double, nullable=False),
    Column("ended_at", Text),
    Column("ended_ts", Double),
    Column("seconds", Double),
    Column("started_by", Text),
    Column("stopped_by", Text),
    Column("files", Text, nullable=False, server_default="[]"),
    Column("bytes", BigInteger),
    Column("dropped_frames", Integer),
    Index("idx_recordings_started_ts", "started_ts"),
)

# Legs in a room now, per node, with their last checkpoint (crash recovery).
conference_live = Table(
    "conference_live",
    metadata,
    Column("node", Text, nullable=False),
    Column("session_id", BigInteger),
    Column("leg", BigInteger, nullable=False),
    Column("caller", Text),
    Column("role", Text),
    Column("name_file", Text),
    Column("joined", Double),
    Column("joined_by", Text),
    Column("counter_pin_name", Text),
    Column("checkpoint", Double),
    PrimaryKeyConstraint("node", "leg"),
)

# Caller IDs that keyed a valid PIN per access number (the lockout exemption).
pin_known_callers = Table(
    "pin_known_callers",
    metadata,
    Column("access_number", Text, nullable=False),
    Column("caller", Text, nullable=False),
    Column("last_ok_at", Text, nullable=False),
    PrimaryKeyConstraint("access_number", "caller"),
)

# Blocks of ids handed to app-server nodes, so each knows a new session's id
# before its row is written (the write may wait out a full disk or an absent
# database) and two nodes never pick the same one.
id_blocks = Table(
    "id_blocks",
    metadata,
    Column("name", Text, primary_key=True),
    Column("next_id", BigInteger, nullable=False),
)
# The tables whose ids come from id_blocks, each from the row named after it:
# rows copied or restored into them must leave next_id above their ids.
BLOCK_NUMBERED = (conference_sessions,)

# Wrong PINs keyed on any node, kept for the guard's window plus its lockout:
# every node replays the others' into its own PinGuard (ivr/guard.py), so all
# see one count and one lockout, and a restart forgets neither.
guard_wrong = Table(
    "guard_wrong",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),  # epoch seconds
    # The access number ("" for a browser's guess, counted per source only).
    Column("number", Text, nullable=False),
    Column("source", Text, nullable=False),
    # Which server process wrote it (it has applied its own already).
    Column("run", Text, nullable=False),
    Index("guard_wrong_at", "at"),
)

# The app-server nodes on this database: where the others reach each over SIP
# (its loopback or LAN address), when it started, its last heartbeat (every
# second) and its load: calls, legs, live rooms, and the CPU its process used
# since the heartbeat before (percent of one core).
nodes = Table(
    "nodes",
    metadata,
    Column("name", Text, primary_key=True),
    Column("address", Text, nullable=False),
    Column("started", Double, nullable=False),
    Column("heartbeat", Double, nullable=False),
    Column("calls", Integer, nullable=False, server_default="0"),
    Column("rooms", Integer, nullable=False, server_default="0"),
    Column("legs", Integer, nullable=False, server_default="0"),
    Column("cpu", Double, nullable=False, server_default="0"),
)

# Each live room's home: the one node that mixes it, until lease_until (epoch
# seconds), which that node renews while the room lives (ponte/homes.py).
room_homes = Table(
    "room_homes",
    metadata,
    Column("room", Text, primary_key=True),
    Column("node", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("lease_until", Double, nullable=False),
)

# Settings all nodes share, made once by the first (the hand-off key).
cluster = Table(
    "cluster",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

# Dial-outs an admin scheduled (`ponte schedule add`, the console's form): at
# `at` (epoch seconds) the appliance calls the moderator (first, if asked) and
# the participants into `room`. `status` goes pending -> running -> done, or
# cancelled / missed (the appliance was down past the late limit) /
# interrupted (it stopped while calling). `node` is the node that claimed it
# with a conditional UPDATE (only one node of a shared database runs it);
# `calls` is the JSON list of each number's outcome, as the runner goes.
schedules = Table(
    "schedules",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("room", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("numbers", Text, nullable=False),  # JSON list of participants' numbers
    Column("moderator", Text),
    Column("moderator_first", Integer, nullable=False, server_default="0"),
    Column("status", Text, nullable=False, server_default="pending"),
    Column("node", Text),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("started_at", Double),
    Column("finished_at", Double),
    Column("calls", Text, nullable=False, server_default="[]"),
    Column("detail", Text, nullable=False, server_default=""),
    Index("schedules_status_at", "status", "at"),
)
