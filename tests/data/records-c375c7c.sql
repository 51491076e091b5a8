-- A records database as release c375c7c wrote it (before issue 23 and 18: no
-- migrations, no ended_by, no live tables), dumped with sqlite3 .dump.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, by TEXT NOT NULL, unix_user TEXT, source TEXT NOT NULL, object TEXT NOT NULL, action TEXT NOT NULL, changes TEXT NOT NULL DEFAULT '{}', summary TEXT NOT NULL DEFAULT '');
INSERT INTO audit VALUES(1,'2026-12-05T07:52:36.066+00:00','ana',NULL,'reload','room:demo','changed','{"max_members": [10, 20]}','max_members: 10 -> 20');
CREATE TABLE restores (id INTEGER PRIMARY KEY, at TEXT NOT NULL, by TEXT NOT NULL, archive TEXT NOT NULL, parts TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
CREATE TABLE calls (id INTEGER PRIMARY KEY, leg INTEGER, origin TEXT, destination TEXT, call_type TEXT, started_at TEXT NOT NULL, answered_at TEXT, ended_at TEXT NOT NULL, duration REAL NOT NULL DEFAULT 0, disposition TEXT NOT NULL, sip_code INTEGER, trunk TEXT, line TEXT, profile_rule TEXT, cut_at_limit INTEGER NOT NULL DEFAULT 0, loss_in REAL, loss_out REAL, jitter_in REAL, jitter_out REAL, rtt_ms REAL, mos REAL, sip_call_id TEXT);
INSERT INTO calls VALUES(1,7,'1001','0800123456','local','2026-09-21T14:13:20.000+00:00','2026-09-21T14:13:23.000+00:00','2026-09-21T14:14:23.000+00:00',60.0,'answered',200,'provider1','1001',NULL,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO marks VALUES('acc',42);
CREATE TABLE IF NOT EXISTS "conference_sessions" (
   "id" INTEGER PRIMARY KEY,
   "room" TEXT,
   "started_at" TEXT,
   "ended_at" TEXT,
   "started_ts" REAL,
   "ended_ts" REAL,
   "legs" INTEGER,
   "participant_seconds" REAL,
   "billed_minutes" INTEGER,
   "peak_members" INTEGER
);
INSERT INTO conference_sessions VALUES(1,'demo','2026-09-21T14:13:20.000+00:00','2026-09-21T14:15:25.000+00:00',1790000000.0,1790000125.0,1,125.0,3,0);
INSERT INTO conference_sessions VALUES(2,'demo','2026-09-21T14:30:00.000+00:00',NULL,1790001000.0,NULL,0,0.0,0,0);
CREATE TABLE IF NOT EXISTS "conference_legs" (
   "id" INTEGER PRIMARY KEY,
   "session_id" INTEGER REFERENCES "conference_sessions"("id"),
   "leg" INTEGER,
   "caller" TEXT,
   "role" TEXT,
   "name_file" TEXT,
   "joined_at" TEXT,
   "left_at" TEXT,
   "seconds" REAL,
   "billed_minutes" INTEGER,
   "ended_by" TEXT,
   "joined_by" TEXT
);
INSERT INTO conference_legs VALUES(1,1,3,'1002','moderator',NULL,'2026-09-21T14:13:20.000+00:00','2026-09-21T14:15:25.000+00:00',125.0,3,'caller','dial-in');
CREATE TABLE usage (key TEXT NOT NULL, cycle TEXT NOT NULL, call_type TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (key, cycle, call_type));
INSERT INTO usage VALUES('line:1001','2026-09-01','local',63.0);
CREATE TABLE alerts (id INTEGER PRIMARY KEY, key TEXT NOT NULL, cycle TEXT NOT NULL, limit_name TEXT NOT NULL, threshold INTEGER NOT NULL, line TEXT, at TEXT NOT NULL, used_seconds REAL, limit_seconds REAL, UNIQUE (key, cycle, limit_name, threshold));
INSERT INTO alerts VALUES(1,'line:1001','2026-09-01','local',60,'1001','2026-09-02T00:00:00+00:00',63.0,100.0);
CREATE TABLE pin_known_callers (access_number TEXT NOT NULL, caller TEXT NOT NULL, last_ok_at TEXT NOT NULL, PRIMARY KEY (access_number, caller));
INSERT INTO pin_known_callers VALUES('4004','cid:1002','2026-09-21T14:13:20.000+00:00');
CREATE INDEX audit_at ON audit (at);
CREATE INDEX calls_started ON calls (started_at);
CREATE INDEX "idx_conference_sessions_room_started_ts"
    ON "conference_sessions" ("room", "started_ts");
CREATE INDEX "idx_conference_legs_session_id"
    ON "conference_legs" ("session_id");
COMMIT;
