"""Scheduled dial-out with real calls: at the agreed time the appliance calls
the moderator first (if asked), then the participants, through the room
line's profile and the trunk; each callee hears the invitation and then the
others. The callees are one softphone answering as the trunk provider."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time

from tests import audio, ports
from tests.harness import cli, report
from tests.test_dialout_calls import config

MODERATOR, P1, P2 = "0212133330001", "0212133330002", "0212133330003"
DENIED = "+552133339999"  # on the room line profile's deny list
INVITATION = "You are invited. Joining you now."


def room(**extra: object) -> dict:
    return {
        "name": "demo",
        "participant_pin": "1111",
        "moderator_pin": "9999",
        "security_level": 3,
        # The schedule's callees hear the room's invitation (its blast message).
        "blast": {"numbers": ["0212133339998"], "message": INVITATION},
        **extra,
    }


def at(seconds: float) -> str:
    """An ISO time `seconds` from now, with its offset."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).isoformat()


def callees(phone, port: int, script: str, calls: int, tones: str = "440"):
    """The trunk provider: a softphone answering `calls` calls (any further
    one is refused 486 Busy), each playing the next tone of `tones`."""
    return phone(
        "",
        script,
        bind="127.0.0.1",
        calls=calls,
        extra=["--answer", "--port", str(port), "--max-seconds", "60", "--pins", tones],
    )


def wait_status(srv, schedule_id: int, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = cli(srv, "schedule", "list", "--json")
        assert found.returncode == 0, found.stderr
        row = next(s for s in json.loads(found.stdout) if s["id"] == schedule_id)
        if row["status"] == status or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


def added(done) -> int:
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[1])


def test_moderator_first_then_participants_hear_the_invitation_and_each_other(
    server_factory, phone
):
    port = ports.allocate(1)
    srv = server_factory(**config(port, room=room()))
    # Two calls answered (moderator 440 Hz, first participant 900 Hz); the
    # third INVITE finds the phone busy.
    phones = callees(phone, port, "wait_media 5; tone {pin}; wait 16; hangup", 2, "440,900")
    schedule_id = added(
        cli(
            srv,
            "schedule",
            "add",
            "demo",
            "--at",
            at(2.5),
            "--numbers",
            f"{P1},{P2},{DENIED}",
            "--moderator",
            MODERATOR,
            "--moderator-first",
        )
    )
    rm, rp = sorted(phones.result(timeout=90), key=lambda r: r["started_at"])
    assert rm["dialed"] == MODERATOR and rp["dialed"] in (P1, P2), (rm["dialed"], rp["dialed"])
    # Both participants are called at once (the trunk allows 2 a second):
    # whichever INVITE reaches the phone second finds it busy.
    answered, busy = (P1, P2) if rp["dialed"] == P1 else (P2, P1)
    # The participants were called only once the moderator had heard the
    # invitation and joined.
    assert rp["started_at"] - rm["started_at"] > 1.5, (rm["started_at"], rp["started_at"])
    for i in (0, 1):
        samples, rate = audio.load(phones.record.parent / f"phone0-{i}.wav")
        assert audio.speech_like(audio.segment(samples, rate, 0.2, 1.5), rate), (
            f"callee {i} heard the invitation"
        )
    # Both in the room: from the participant's joining to the moderator's hang-up.
    together = (rp["started_at"] + 4.0, rm["ended_at"] - 0.5)
    assert together[1] - together[0] > 3.0, together
    m_all, rate = audio.load(phones.record.parent / "phone0-0.wav")
    p_all, _ = audio.load(phones.record.parent / "phone0-1.wav")
    m_heard = audio.segment(
        m_all, rate, together[0] - rm["record_start"], together[1] - rm["record_start"]
    )
    p_heard = audio.segment(
        p_all, rate, together[0] - rp["record_start"], together[1] - rp["record_start"]
    )
    assert audio.band_fraction(m_heard, rate, 900) > 0.2, "the moderator hears the participant"
    assert audio.band_fraction(p_heard, rate, 440) > 0.2, "the participant hears the moderator"

    row = wait_status(srv, schedule_id, "done")
    assert row["status"] == "done", row
    rows = {r["number"]: r for r in report(srv, "schedules")}
    assert rows[MODERATOR]["role"] == "moderator" and rows[MODERATOR]["outcome"] == "joined"
    assert rows[MODERATOR]["answered_at"] and rows[MODERATOR]["called_at"]
    assert rows[answered]["outcome"] == "joined" and rows[answered]["answered_at"]
    assert rows[busy]["outcome"] == "busy" and not rows[busy]["answered_at"], rows[busy]
    assert rows[DENIED]["outcome"] == "refused" and "line profile" in rows[DENIED]["detail"]
    db = sqlite3.connect(srv.config["database"])
    joined = db.execute(
        "SELECT caller, role FROM conference_legs WHERE joined_by = 'schedule'"
    ).fetchall()
    assert sorted(joined) == [(MODERATOR, "moderator"), (answered, "participant")], joined
    # Each call is in the call history from the room's line, through the trunk.
    calls = report(srv, "calls", "--line", "room:demo")
    assert {c["destination"] for c in calls} == {MODERATOR, P1, P2}, calls


def test_a_schedule_survives_a_restart_and_a_long_missed_one_is_marked_missed(
    server_factory, phone
):
    port = ports.allocate(1)
    srv = server_factory(**config(port, room=room()))
    # Both are added far enough ahead that nothing fires while the server runs,
    # however slow the machine; the records are then moved while it is down.
    soon = added(cli(srv, "schedule", "add", "demo", "--at", at(300), "--numbers", P1))
    stale = added(cli(srv, "schedule", "add", "demo", "--at", at(300), "--numbers", P2))
    p = callees(phone, port, "wait_media 5; wait 6; hangup", 1)
    # A live reload keeps them (they live in the records, not the YAML).
    assert cli(srv, "reload").returncode == 0
    assert [s["status"] for s in json.loads(cli(srv, "schedule", "list", "--json").stdout)] == [
        "pending",
        "pending",
    ]
    assert srv.stop() == 0
    # While the server is down: the first falls due, the second is 20 min overdue.
    db = sqlite3.connect(srv.config["database"])
    with db:
        db.execute("UPDATE schedules SET at = ? WHERE id = ?", (time.time() - 1, soon))
        db.execute("UPDATE schedules SET at = ? WHERE id = ?", (time.time() - 1200, stale))
    db.close()
    assert srv.restart() == 0
    r = p.result(timeout=60)
    assert r["dialed"] == P1
    samples, rate = audio.load(p.record)
    assert audio.speech_like(audio.segment(samples, rate, 0.2, 1.5), rate), "the invitation"
    assert wait_status(srv, soon, "done")["status"] == "done"
    restarted = srv.log().rindex("listening on sip:")
    assert srv.log().index(f"schedule {soon} room=demo starts") > restarted, "run after the restart"
    rows = {r["schedule"]: r for r in report(srv, "schedules")}
    assert rows[soon]["outcome"] == "joined" and rows[soon]["answered_at"]
    assert rows[stale]["status"] == "missed" and "late" in rows[stale]["detail"], rows[stale]


def test_bad_schedules_are_refused_and_nothing_is_stored(server_factory):
    srv = server_factory(
        rooms=[
            room(department="vendas"),
            {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
        ],
        schedules={"max_numbers": 3},
        departments={"vendas": {"profile": "p"}},
        profiles={"p": {"limits": {"local": "unlimited"}}},
        admins=[
            {"name": "ana", "role": "administrator"},
            {"name": "bruno", "role": "sub_administrator", "departments": ["vendas"]},
            {"name": "carla", "role": "read_only"},
        ],
    )
    ok = ["--numbers", P1, "--as", "ana"]
    bad = [
        (["nowhere", "--at", at(60), *ok], "no room 'nowhere'", 2),
        (["demo", "--at", at(-60), *ok], "in the past", 2),
        (["demo", "--at", "tomorrow", *ok], "not an ISO time", 2),
        (["demo", "--at", "2030-01-01T10:00:00", *ok], "needs a UTC offset", 2),
        (["demo", "--at", at(60), "--numbers", "0212x", "--as", "ana"], "not a phone number", 2),
        (["demo", "--at", at(60), "--numbers", f"{P1};rm -rf", "--as", "ana"], "not a phone", 2),
        (
            ["demo", "--at", at(60), "--numbers", "021111,021112,021113,021114", "--as", "ana"],
            "too many",
            2,
        ),
        (["demo", "--at", at(60), "--numbers", f"{P1},{P1}", "--as", "ana"], "twice", 2),
        (["demo", "--at", at(60), "--moderator-first", *ok], "needs --moderator", 2),
        (["demo", "--at", at(60), "--numbers", P1], "--as NAME", 3),
        (["demo", "--at", at(60), "--numbers", P1, "--as", "carla"], "read-only", 3),
        (["other", "--at", at(60), "--numbers", P1, "--as", "bruno"], "sub-administrator", 3),
        (["demo", "--at", at(60), "--numbers", P1, "--as", "mallory"], "not an admin", 3),
    ]
    for args, why, code in bad:
        done = cli(srv, "schedule", "add", *args)
        assert done.returncode == code and why in done.stderr, (args, done.stderr)
    listed = cli(srv, "schedule", "list", "--json", "--as", "ana")
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stdout
    db = sqlite3.connect(srv.config["database"])
    assert db.execute("SELECT COUNT(*) FROM schedules").fetchone() == (0,)

    # A good one by the sub-administrator of its department; cancelled once.
    sid = added(cli(srv, "schedule", "add", "demo", "--at", at(600), *ok[:2], "--as", "bruno"))
    for target, why, code in (
        ("abc", "is a number", 2),
        ("999", "no schedule 999", 2),
    ):
        done = cli(srv, "schedule", "cancel", target, "--as", "ana")
        assert done.returncode == code and why in done.stderr, done.stderr
    denied = cli(srv, "schedule", "cancel", str(sid), "--as", "carla")
    assert denied.returncode == 3 and "read-only" in denied.stderr
    assert cli(srv, "schedule", "cancel", str(sid), "--as", "bruno").returncode == 0
    again = cli(srv, "schedule", "cancel", str(sid), "--as", "ana")
    assert again.returncode == 2 and "is cancelled" in again.stderr
    rows = db.execute("SELECT status, created_by FROM schedules").fetchall()
    assert rows == [("cancelled", "bruno")], rows
    audit = report(srv, "audit", "--object", "schedule")
    assert [(a["action"], a["by"]) for a in audit] == [("add", "bruno"), ("cancel", "bruno")]


def test_one_node_claims_a_due_schedule_on_sqlite_and_postgresql(records_spec):
    """Two nodes' stores on one database: the conditional UPDATE gives a due
    schedule to exactly one; a cancelled or missed one to none."""
    from ponte.scheduler import NewSchedule, ScheduleStore
    from store.migrate import open_database

    a, b = ScheduleStore(open_database(records_spec)), ScheduleStore(open_database(records_spec))
    now = time.time()
    new = NewSchedule("demo", now - 1, (P1, P2), MODERATOR, True)
    first, second, third = (a.add(new, "ana", now - 60) for _ in range(3))
    assert [r["id"] for r in b.due(now)] == [first, second, third]
    assert [a.claim(first, "node-a", now), b.claim(first, "node-b", now)] == [True, False]
    assert b.cancel(second, now) and not a.claim(second, "node-a", now)
    assert a.miss(third, now, "20 min late") and not b.claim(third, "node-b", now)
    assert not b.cancel(third, now), "one that ended (missed) is not cancelled"
    assert b.due(now) == []
    row = b.get(first)
    assert row is not None and (row["status"], row["node"]) == ("running", "node-a")
    assert [(c["number"], c["role"]) for c in row["calls"]] == [
        (MODERATOR, "moderator"),
        (P1, "participant"),
        (P2, "participant"),
    ]
    # node-a dies while calling: its next start marks the run interrupted.
    assert b.interrupted("node-b", now) == [] and a.interrupted("node-a", now) == [first]
    statuses = {r["id"]: r["status"] for r in a.rows()}
    assert statuses == {first: "interrupted", second: "cancelled", third: "missed"}
    # A running one cancelled on node-b: node-a sees it and stops dialling;
    # its outcomes are still written, and it stays cancelled.
    fourth = a.add(new, "ana", now - 60)
    assert a.claim(fourth, "node-a", now) and a.cancelled([fourth]) == []
    assert b.cancel(fourth, now + 1) and a.cancelled([first, fourth]) == [fourth]
    a.finish(fourth, [{"number": P1, "role": "participant", "outcome": "not_called"}], now + 2)
    row = a.get(fourth)
    assert row is not None and (row["status"], row["finished_at"]) == ("cancelled", now + 1)
    assert row["calls"][0]["outcome"] == "not_called"


def test_the_console_form_adds_and_cancels_through_the_same_checks(server_factory):
    import asyncio

    from tests.consoleclient import ConsoleClient
    from web.auth import hash_password

    password = "correct horse battery"
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    srv = server_factory(
        rooms=[room()],
        web={"listen": f"127.0.0.1:{port}"},
        admins=[
            {"name": "ana", "role": "administrator", "password_hash": hash_password(password)},
            {"name": "carla", "role": "read_only", "password_hash": hash_password(password)},
        ],
    )
    db = sqlite3.connect(srv.config["database"])

    async def post(who: ConsoleClient, path: str, **fields: str) -> tuple[int, str]:
        form = {"csrf": who.csrf, **fields}
        async with who.http.post(f"{base}{path}", data=form, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    async def scenario() -> None:
        ana, carla = ConsoleClient(base), ConsoleClient(base)
        try:
            assert await ana.login("ana", password) == 303
            assert await carla.login("carla", password) == 303
            good = {"room": "demo", "at": at(600), "numbers": f"{P1}, {P2}", "moderator": ""}
            for fields, status, why in (
                ({**good, "room": "nowhere"}, 400, "no room"),
                ({**good, "at": at(-600)}, 400, "in the past"),
                ({**good, "numbers": "0211<script>"}, 400, "not a phone number"),
                ({**good, "moderator_first": "1"}, 400, "needs --moderator"),
            ):
                code, text = await post(ana, "/schedules", **fields)
                assert code == status and why in text, (fields, code, text[:300])
                assert "<script>" not in text.split("<main>")[1]
            code, text = await post(carla, "/schedules", **good)
            assert code == 403 and "read-only" in text
            assert db.execute("SELECT COUNT(*) FROM schedules").fetchone() == (0,)

            code, _ = await post(ana, "/schedules", **good)
            assert code == 303
            status, page = await carla.get("/schedules")
            assert status == 200 and P2 in page and ">Cancel</button>" not in page
            (sid,) = db.execute("SELECT id FROM schedules").fetchone()
            assert (await post(carla, f"/schedules/{sid}/cancel"))[0] == 403
            assert (await post(ana, f"/schedules/{sid}/cancel"))[0] == 303
        finally:
            await ana.close()
            await carla.close()

    asyncio.run(scenario())
    assert db.execute("SELECT status, created_by FROM schedules").fetchall() == [
        ("cancelled", "ana")
    ]
    audit = report(srv, "audit", "--object", "schedule")
    assert [(a["action"], a["by"], a["source"]) for a in audit] == [
        ("add", "ana", "web"),
        ("cancel", "ana", "web"),
    ]


def test_two_nodes_on_one_postgresql_run_each_schedule_once(server_factory, pg_url):
    """Both nodes poll the shared `schedules`; each due one is claimed and
    run by exactly one of them (no trunk here: each number ends `refused`)."""
    nodes = [server_factory(rooms=[room()], database=pg_url) for _ in range(2)]
    ids = [
        added(cli(nodes[i % 2], "schedule", "add", "demo", "--at", at(3), "--numbers", P1))
        for i in range(6)
    ]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = json.loads(cli(nodes[0], "schedule", "list", "--json").stdout)
        if all(r["status"] == "done" for r in rows):
            break
        time.sleep(0.5)
    assert {r["id"]: r["status"] for r in rows} == dict.fromkeys(ids, "done"), rows
    runs = [n.log().count(f"schedule {sid} room=demo starts") for sid in ids for n in nodes]
    assert sum(runs) == len(ids) and max(runs) == 1, runs
    outcomes = report(nodes[1], "schedules")
    assert {r["outcome"] for r in outcomes} == {"refused"} and len(outcomes) == len(ids)
    assert all("no trunk serves" in r["detail"] for r in outcomes), outcomes
