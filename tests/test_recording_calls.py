"""Conference recording with real calls: *93 and the admin's record-start,
what every member hears about it, and what the files hold, checked by content."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests import audio
from tests.harness import Server, cli, report
from tests.test_spine_calls import hash_time, window

RECORDED: list[dict[str, Any]] = [
    {
        "name": "demo",
        "participant_pin": "1111",
        "moderator_pin": "9999",
        "allow_recording": True,
        "record_tracks": True,
    },
    {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
]


def key_times(r: dict[str, Any], key: str = "*93") -> list[float]:
    """When each `key` sequence was complete (its last digit sent)."""
    sent = r["digits_sent"]
    return [
        sent[i + len(key) - 1][2]
        for i in range(len(sent) - len(key) + 1)
        if "".join(d for d, _m, _t in sent[i : i + len(key)]) == key
    ]


def recordings(srv: Server, want: int = 1, ended: bool = True) -> list[dict[str, Any]]:
    """`ponte report recordings --json`, once `want` rows are (complete)."""
    deadline = time.monotonic() + 10
    while True:
        rows = report(srv, "recordings")
        done = [r for r in rows if r["ended_at"] or not ended]
        if len(done) >= want or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def files(srv: Server, row: dict[str, Any]) -> dict[str, Path]:
    root = Path(srv.config["state_dir"]) / "recordings" / row["folder"]
    return {f["name"]: root / f["name"] for f in row["files"]}


def test_star93_records_the_mix_and_a_track_per_member_and_everyone_is_told(server_factory, phone):
    srv = server_factory(rooms=RECORDED)
    mod = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 9999#; wait 1.5; dtmf *93; wait 4.5; tone 440; wait 4; tone 0; "
        "wait 0.5; dtmf *93; wait 3; hangup",
    )
    part = phone(
        srv.uri("conf-en"),
        "wait_media 5; dtmf 1111#; wait 6; tone 700; wait 3.5; tone 0; wait 5; hangup",
    )
    # A late joiner, after the start: told on entry.
    late = phone(srv.uri("conf-en"), "wait_media 5; wait 4; dtmf 1111#; wait 4; hangup")
    rm, rp, rl = mod.result(), part.result(), late.result()
    start, stop = key_times(rm)
    assert hash_time(rl) > start + 0.5, "the late joiner came in after the start"
    # Every member hears "this conference is being recorded" after the key.
    for p, r in ((mod, rm), (part, rp)):
        heard, rate = audio.load(p.record)
        told = audio.segment(heard, rate, *window(r, start + 0.3, start + 2.3))
        assert audio.speech_like(told, rate), f"{p.record}: no announcement after *93"
        stopped = audio.segment(heard, rate, *window(r, stop + 0.3, stop + 1.5))
        assert audio.speech_like(stopped, rate), f"{p.record}: no 'recording stopped'"
    heard, rate = audio.load(late.record)
    told = audio.segment(heard, rate, *window(rl, hash_time(rl) + 0.3, hash_time(rl) + 2.3))
    assert audio.speech_like(told, rate), "the late joiner was not told"

    (row,) = recordings(srv)
    assert row["room"] == "demo"
    assert "moderator" in row["started_by"] and "moderator" in row["stopped_by"]
    assert row["dropped_frames"] == 0, row
    got = files(srv, row)
    assert set(got) >= {"mix.wav"} and len(got) == 4, row  # mix + 3 members
    # The mix: both tones; as long as the recording ran (no frame lost or late).
    mix, rate = audio.load(got["mix.wav"])
    assert audio.band_fraction(mix, rate, 440) > 0.2 and audio.band_fraction(mix, rate, 700) > 0.2
    assert abs(len(mix) / rate - (stop - start)) < 0.5, (len(mix) / rate, stop - start)
    # Each member's track: its own tone only.
    by_leg = {f["caller"]: got[f["name"]] for f in row["files"] if f.get("caller")}
    tracks = [audio.load(p)[0] for p in got.values() if p.name != "mix.wav"]
    own = {hz: [t for t in tracks if audio.band_fraction(t, rate, hz) > 0.5] for hz in (440, 700)}
    assert len(own[440]) == 1 and len(own[700]) == 1, by_leg
    assert audio.band_fraction(own[440][0], rate, 700) < 0.02
    assert audio.band_fraction(own[700][0], rate, 440) < 0.02
    # The moderator's steady tone has no hole in its track: no frame gap.
    assert audio.longest_gap(own[440][0][int(5 * rate) : int(8 * rate)], rate, 440) < 0.1
    assert srv.proc.poll() is None


PASSWORD = "correct horse battery"


def _admin(name: str, role: str, *departments: str) -> dict[str, Any]:
    from web.auth import hash_password

    extra = {"departments": list(departments)} if departments else {}
    return {"name": name, "role": role, "password_hash": hash_password(PASSWORD), **extra}


DEPARTMENTS = {
    "departments": {"vendas": {"profile": "equipe"}, "rh": {"profile": "equipe"}},
    "profiles": {"equipe": {"quota": "shared", "limits": {"local": 300}}},
}


def test_admin_records_from_the_cli_and_the_console_downloads_by_department(server_factory, phone):
    import asyncio

    import yarl

    from tests import ports
    from tests.consoleclient import ConsoleClient

    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    rooms = [
        {**RECORDED[0], "record_tracks": None, "department": "vendas"},
        {**RECORDED[1], "department": "rh"},  # does not allow recording
    ]
    admins = [
        _admin("ana", "administrator"),
        _admin("bruno", "sub_administrator", "vendas"),
        _admin("rita", "sub_administrator", "rh"),
    ]
    srv = server_factory(
        web={"listen": f"127.0.0.1:{port}"}, admins=admins, rooms=rooms, **DEPARTMENTS
    )
    mod = phone(srv.uri("conf-en"), "wait_media 5; dtmf 9999#; tone 440; wait 10; hangup")
    other = phone(
        srv.uri("conf-en"), "wait_media 5; dtmf 8888#; wait 2; dtmf *93; wait 4; hangup", False
    )
    deadline = time.monotonic() + 15
    while "call" not in srv.log() or srv.log().count(" join room=") < 2:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.2)

    # Refused with a clear error, and nothing recorded: a room without
    # allow_recording (the key too), a sub-administrator of another department.
    no = cli(srv, "room", "record-start", "other", "--as", "ana")
    assert no.returncode != 0 and "does not allow recording" in no.stderr, no.stderr
    denied = cli(srv, "room", "record-start", "demo", "--as", "rita")
    assert denied.returncode != 0 and "rita" in denied.stderr, denied.stderr
    assert recordings(srv, ended=False, want=0) == []
    started = cli(srv, "room", "record-start", "demo", "--as", "bruno")
    assert started.returncode == 0, started.stderr
    at = time.monotonic()
    time.sleep(3)
    assert cli(srv, "room", "record-stop", "demo", "--as", "bruno").returncode == 0
    rm = mod.result()
    other.result()
    assert "key action=record refused room=other" in srv.log()
    heard, rate = audio.load(mod.record)
    told = audio.segment(heard, rate, *window(rm, at + 0.1, at + 2.0))
    assert audio.speech_like(told, rate), "the admin's start was not announced"

    (row,) = recordings(srv)
    assert (row["room"], row["started_by"], row["stopped_by"]) == ("demo", "bruno", "bruno")
    assert [f["name"] for f in row["files"]] == ["mix.wav"]  # no tracks unless asked
    mix_path = files(srv, row)["mix.wav"]
    mix, rate = audio.load(mix_path)
    assert audio.band_fraction(mix, rate, 440) > 0.5
    url = f"/api/recordings/{row['id']}/mix.wav"

    async def console() -> dict[str, Any]:
        got: dict[str, Any] = {}
        clients = {n: ConsoleClient(base) for n in ("ana", "bruno", "rita")}
        anon = ConsoleClient(base)
        try:
            for name, c in clients.items():
                assert await c.login(name, PASSWORD) == 303
                status, text = await c.get("/api/recordings")
                got[f"{name} list"] = [r["id"] for r in json.loads(text)["recordings"]]
                async with c.http.get(base + url) as resp:
                    got[name] = (resp.status, await resp.read())
            async with anon.http.get(base + url, allow_redirects=False) as resp:
                got["anonymous"] = resp.status
            attacks = [
                f"/api/recordings/{row['id']}/..%2F..%2F..%2Fponte.db",
                f"/api/recordings/{row['id']}/%2e%2e%2fponte.yaml",
                f"/api/recordings/{row['id']}/..%2Fmix.wav",
                f"/api/recordings/{row['id']}/%2Fetc%2Fpasswd",
                f"/api/recordings/{row['id']}/.mix.wav",
                f"/api/recordings/{row['id']}/ponte.db",
                f"/api/recordings/{row['id']}/mix.wav%00.txt",
                f"/api/recordings/{row['id']}/..",
                "/api/recordings/..%2F..%2Fponte.db/mix.wav",
                "/api/recordings/999999/mix.wav",
                "/api/recordings/-1/mix.wav",
            ]
            got["attacks"] = {}
            for path in attacks:
                async with clients["ana"].http.get(yarl.URL(base + path, encoded=True)) as resp:
                    got["attacks"][path] = (resp.status, await resp.read())
        finally:
            for c in (*clients.values(), anon):
                await c.close()
        return got

    got = asyncio.run(console())
    whole = mix_path.read_bytes()
    assert got["ana"] == (200, whole) and got["bruno"] == (200, whole)
    assert got["rita"][0] == 403 and got["rita list"] == []
    assert got["ana list"] == [row["id"]] and got["bruno list"] == [row["id"]]
    assert got["anonymous"] in (302, 303, 401)
    for path, (status, body) in got["attacks"].items():
        assert status in (400, 403, 404), (path, status)
        assert b"RIFF" not in body and b"SQLite" not in body and b"root:" not in body, path
    assert srv.proc.poll() is None


def test_retention_deletes_old_recordings_at_start(server_factory, tmp_path):
    """A folder older than `retention_days` goes at start (rows or not); a
    recent one and anything outside the recordings' shape stay."""
    import datetime as dt

    state = tmp_path / "state"
    root = state / "recordings" / "demo"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    folders = {
        "old": root / old.strftime("%Y%m%dT%H%M%SZ"),
        "recent": root / recent.strftime("%Y%m%dT%H%M%SZ"),
        "other": root / "notes",
    }
    for folder in folders.values():
        folder.mkdir(parents=True)
        (folder / "mix.wav").write_bytes(b"RIFF")
    srv = server_factory(recordings={"retention_days": 1}, state_dir=str(state))
    deadline = time.monotonic() + 5
    while folders["old"].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not folders["old"].exists()
    assert folders["recent"].exists() and folders["other"].exists()
    assert "older than the retention" in srv.log()


# -- the pure parts and the writer, without calls ------------------------------


def test_recorders_hear_who_the_room_hears_and_close_with_their_members():
    from bridge.room import CloseTrack, Connect, EndRecording, Recording, Room

    room = Room("demo")
    room.join(1, "moderator", 0.0)
    room.join(2, "participant", 0.0)
    room.set_recording(Recording(mix=100, per_member=True))
    room.set_track(1, 101)
    room.set_track(2, 102)
    assert {(1, 100), (2, 100), (1, 101), (2, 102)} <= room.links
    assert (1, 102) not in room.links and (2, 101) not in room.links
    room.set_muted(2, True)  # a muted member is not recorded
    assert (2, 100) not in room.links and (2, 102) not in room.links
    joined = room.join(3, "participant", 0.0)
    assert any(getattr(c, "items", None) == ("recording_on",) for c in joined)
    left = room.leave(2)
    assert CloseTrack("demo", 2, 102) in left
    room.leave(3)
    assert EndRecording("demo") in room.leave(1)
    # Stopped: no recorder link is left behind.
    other = Room("x")
    other.join(1, "moderator", 0.0)
    other.set_recording(Recording(mix=100, per_member=False))
    assert Connect(1, 100) not in other.set_recording(None) and other.links == set()


def test_star93_needs_the_rooms_consent_and_a_level_above_1():
    import datetime as dt

    from bridge.controls import Context, StartRecording, run_action
    from bridge.levels import LevelPolicy
    from bridge.room import Room
    from ivr.keys import DEFAULT_KEYS, KeyReader

    assert DEFAULT_KEYS["*93"] == "record"
    room = Room("demo")
    room.join(1, "moderator", 0.0)
    room.join(2, "participant", 0.0)
    keys = KeyReader(DEFAULT_KEYS)

    def run(leg: int, level: int, allow: bool) -> list[Any]:
        policy = LevelPolicy(level, "UTC", dt.date(2026, 1, 1), allow_recording=allow)
        return run_action(room, leg, "record", Context(policy, keys))

    assert not any(isinstance(c, StartRecording) for c in run(1, 2, False))
    assert not any(isinstance(c, StartRecording) for c in run(1, 1, True))
    assert not any(isinstance(c, StartRecording) for c in run(2, 3, True))  # participant
    assert any(isinstance(c, StartRecording) for c in run(1, 2, True))


def test_a_stalled_disk_never_holds_up_the_drain(tmp_path, monkeypatch):
    """The writer thread sleeps 1.5 s on one frame (a stalled disk); the drain
    thread goes on emptying the port's ring meanwhile, so a ring of 250 frames
    fed 50 frames a second loses nothing, and the file has every frame."""
    import threading
    import wave

    from pbx import recorder

    ring: list[bytes] = []
    lock = threading.Lock()
    slow = {"left": 1}
    real = wave.Wave_write.writeframesraw

    def stalling(self: wave.Wave_write, data: Any) -> None:
        if slow["left"]:
            slow["left"] = 0
            time.sleep(1.5)
        real(self, data)

    monkeypatch.setattr(wave.Wave_write, "writeframesraw", stalling)

    def pull() -> bytes | None:
        with lock:
            return ring.pop(0) if ring else None

    pool = recorder.RecorderPool()
    done: list[recorder.Result] = []
    pool.open(1, tmp_path / "mix.wav", 8000, pull, lambda: {"dropped_out": 0})
    most = 0
    for i in range(150):  # 3 s of the clock: 20 ms frames into the ring
        with lock:
            ring.append(bytes([i % 256]) * 320)
            most = max(most, len(ring))
        time.sleep(0.02)
    pool.close(1, done.append)
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.shutdown()
    (result,) = done
    assert result.frames == 150 and result.dropped == 0
    assert most < 20, f"the ring held {most} frames while the disk stalled"
    assert pool.max_write_seconds >= 1.4  # the stall happened, on the writer
    with wave.open(str(tmp_path / "mix.wav")) as w:
        assert w.getnframes() == 150 * 160
