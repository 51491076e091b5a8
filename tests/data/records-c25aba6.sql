-- Records as release c25aba6 (before migrations) wrote them, through its own
-- stores (RecordStore, BillingStore, UsageStore, KnownCallerStore): calls, an
-- answered call still up on node-a, audit, restores, the acc mark, sessions 1
-- and 57 with their legs and session 58 still open (a live leg), usage, an
-- alert, a PIN-known caller. `sqlite3 FILE .dump` of that file.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, by TEXT NOT NULL, unix_user TEXT, source TEXT NOT NULL, object TEXT NOT NULL, action TEXT NOT NULL, changes TEXT NOT NULL DEFAULT '{}', summary TEXT NOT NULL DEFAULT '');
INSERT INTO audit VALUES(1,'2026-12-05T07:53:58.028+00:00','ana','root','reload','room:demo','changed','{"max_members": [10, 12]}','max_members: 10 -> 12');
CREATE TABLE restores (id INTEGER PRIMARY KEY, at TEXT NOT NULL, by TEXT NOT NULL, archive TEXT NOT NULL, parts TEXT NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
INSERT INTO restores VALUES(1,'2026-12-05T07:53:58.028+00:00','ana','/var/lib/ponte/backups/x.tar.gz','rooms','success','');
CREATE TABLE calls (id INTEGER PRIMARY KEY, leg INTEGER, origin TEXT, destination TEXT, call_type TEXT, started_at TEXT NOT NULL, answered_at TEXT, ended_at TEXT NOT NULL, duration REAL NOT NULL DEFAULT 0, disposition TEXT NOT NULL, sip_code INTEGER, trunk TEXT, line TEXT, profile_rule TEXT, cut_at_limit INTEGER NOT NULL DEFAULT 0, loss_in REAL, loss_out REAL, jitter_in REAL, jitter_out REAL, rtt_ms REAL, mos REAL, sip_call_id TEXT, ended_by TEXT);
INSERT INTO calls VALUES(1,100,'1001','11999887770','mobile','2026-11-18T11:06:40.000+00:00','2026-11-18T11:06:44.000+00:00','2026-11-18T11:07:14.000+00:00',30.0,'answered',200,'main','1001','p',0,NULL,NULL,NULL,NULL,NULL,4.2999999999999998223,'c0@x','caller');
INSERT INTO calls VALUES(2,101,'1001','11999887771','mobile','2026-11-18T11:07:40.000+00:00','2026-11-18T11:07:44.000+00:00','2026-11-18T11:08:14.000+00:00',30.0,'answered',200,'main','1001','p',0,NULL,NULL,NULL,NULL,NULL,4.2999999999999998223,'c1@x','caller');
INSERT INTO calls VALUES(3,102,'1001','11999887772','mobile','2026-11-18T11:08:40.000+00:00','2026-11-18T11:08:44.000+00:00','2026-11-18T11:09:14.000+00:00',30.0,'answered',200,'main','1001','p',0,NULL,NULL,NULL,NULL,NULL,4.2999999999999998223,'c2@x','caller');
CREATE TABLE live_calls (node TEXT NOT NULL, leg INTEGER NOT NULL, record TEXT NOT NULL, checkpoint REAL NOT NULL, PRIMARY KEY (node, leg));
INSERT INTO live_calls VALUES('node-a',200,'{"leg": 200, "origin": "2001", "destination": "1001", "started": 1795000500.0, "call_type": "internal", "answered": 1795000502.0, "disposition": "answered", "sip_code": null, "trunk": null, "line": null, "profile_rule": null, "cut_at_limit": false, "sip_call_id": null, "loss_in": null, "loss_out": null, "jitter_in": null, "jitter_out": null, "rtt_ms": null, "mos": null, "ended_by": null}',1795000502.0);
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
, "ended_by" TEXT);
INSERT INTO conference_sessions VALUES(1,'demo','2026-11-18T11:06:40.000+00:00','2026-11-18T11:08:15.000+00:00',1795000000.0,1795000095.0,2,189.0,4,0,'empty');
INSERT INTO conference_sessions VALUES(57,'demo','2026-11-18T11:23:20.000+00:00','2026-11-18T11:24:55.000+00:00',1795001000.0,1795001095.0,2,189.0,4,0,'empty');
INSERT INTO conference_sessions VALUES(58,'demo','2026-11-18T11:56:40.000+00:00',NULL,1795003000.0,NULL,0,0.0,0,0,NULL);
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
INSERT INTO conference_legs VALUES(1,1,300,'1000','participant',NULL,'2026-11-18T11:06:40.000+00:00','2026-11-18T11:08:15.000+00:00',95.0,2,'caller','dial-in');
INSERT INTO conference_legs VALUES(2,1,301,'1001','participant',NULL,'2026-11-18T11:06:41.000+00:00','2026-11-18T11:08:15.000+00:00',94.0,2,'caller','dial-in');
INSERT INTO conference_legs VALUES(3,57,310,'1000','participant',NULL,'2026-11-18T11:23:20.000+00:00','2026-11-18T11:24:55.000+00:00',95.0,2,'caller','dial-in');
INSERT INTO conference_legs VALUES(4,57,311,'1001','participant',NULL,'2026-11-18T11:23:21.000+00:00','2026-11-18T11:24:55.000+00:00',94.0,2,'caller','dial-in');
CREATE TABLE IF NOT EXISTS "conference_live" (
   "node" TEXT,
   "session_id" INTEGER,
   "leg" INTEGER,
   "caller" TEXT,
   "role" TEXT,
   "name_file" TEXT,
   "joined" REAL,
   "joined_by" TEXT,
   "checkpoint" REAL,
   PRIMARY KEY ("node", "leg")
);
INSERT INTO conference_live VALUES('node-a',58,400,'1002','moderator',NULL,1795003000.0,'dial-in',1795003030.0);
CREATE TABLE usage (key TEXT NOT NULL, cycle TEXT NOT NULL, call_type TEXT NOT NULL, seconds REAL NOT NULL DEFAULT 0, PRIMARY KEY (key, cycle, call_type));
INSERT INTO usage VALUES('line:1001','2026-11-01','mobile',90.0);
INSERT INTO usage VALUES('dept:sales','2026-11-01','mobile',90.0);
CREATE TABLE alerts (id INTEGER PRIMARY KEY, key TEXT NOT NULL, cycle TEXT NOT NULL, limit_name TEXT NOT NULL, threshold INTEGER NOT NULL, line TEXT, at TEXT NOT NULL, used_seconds REAL, limit_seconds REAL, UNIQUE (key, cycle, limit_name, threshold));
INSERT INTO alerts VALUES(1,'line:1001','2026-11-01','mobile',60,'1001','2026-11-18T12:00:00+00:00',90.0,120.0);
CREATE TABLE pin_known_callers (access_number TEXT NOT NULL, caller TEXT NOT NULL, last_ok_at TEXT NOT NULL, PRIMARY KEY (access_number, caller));
INSERT INTO pin_known_callers VALUES('5000','1001','2026-11-18T11:06:40.000+00:00');
CREATE INDEX audit_at ON audit (at);
CREATE INDEX calls_started ON calls (started_at);
CREATE INDEX "idx_conference_sessions_room_started_ts"
    ON "conference_sessions" ("room", "started_ts");
CREATE INDEX "idx_conference_legs_session_id"
    ON "conference_legs" ("session_id");
COMMIT;
