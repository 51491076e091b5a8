"""Admin operations against a running appliance with real calls: audit rows
for reloads and room actions, roles that refuse, and a restore that brings
old values back."""

from __future__ import annotations

import json
import time

import yaml

from tests import audio
from tests.harness import cli, report
from tests.test_spine_calls import window


def _members(srv, room: str, count: int, timeout: float = 15) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = srv.status()["rooms"].get(room, {}).get("members", [])
        if len(members) >= count:
            return members
        time.sleep(0.1)
    raise AssertionError(f"room {room} never had {count} members: {srv.status()}")


def _write(srv, **changes) -> None:
    cfg = yaml.safe_load(srv.config_path.read_text())
    cfg.update(changes)
    srv.config_path.write_text(yaml.safe_dump(cfg))


def test_restore_brings_back_the_old_pin_and_the_audit_shows_both(server_factory, phone):
    srv = server_factory()
    made = cli(srv, "backup", "--parts", "rooms,usage", "--by", "tester")
    assert made.returncode == 0, made.stderr
    archive = made.stdout.strip()
    rooms = [dict(r) for r in srv.config["rooms"]]
    rooms[0]["participant_pin"] = "5151"
    _write(srv, rooms=rooms)
    done = cli(srv, "reload", "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert "1 objects changed" in done.stdout
    phone(srv.uri("conf"), "wait_media 5; dtmf 5151#; wait 1; hangup", record=False).result()
    assert srv.log().count("join room=demo role=participant") == 1

    done = cli(srv, "restore", archive, "--by", "bob")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "restore success" in done.stdout
    assert "participant_pin: '1111'" in srv.config_path.read_text()
    old = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; wait 1; hangup", record=False)
    gone = phone(srv.uri("conf"), "wait_media 5; dtmf 5151#; wait 2; hangup", record=False)
    old.result(), gone.result()
    assert srv.log().count("join room=demo role=participant") == 2, "only the old PIN joined"

    audit = report(srv, "audit", "--object", "room:demo")
    assert [(a["source"], a["by"], a["action"]) for a in audit] == [
        ("reload", "alice", "changed"),
        ("restore", "bob", "changed"),
    ]
    assert all(
        json.loads(a["changes"]) == {"participant_pin": ["(secret)", "(changed)"]} for a in audit
    )
    assert "5151" not in json.dumps(audit) and "1111" not in json.dumps(audit)
    (usage_row,) = report(srv, "audit", "--object", "usage")
    assert usage_row["source"] == "restore"
    (restore,) = report(srv, "restores")
    assert restore["status"] == "success" and restore["by"] == "bob"
    assert restore["parts"] == "rooms,usage"
    out = cli(srv, "backup", "list")
    assert archive.rsplit("/", 1)[1] in out.stdout


def roles_config() -> dict:
    return {
        "rooms": [
            {
                "name": "demo",
                "participant_pin": "1111",
                "moderator_pin": "9999",
                "department": "vendas",
            },
            {"name": "other", "participant_pin": "2222", "moderator_pin": "8888"},
        ],
        "profiles": {"p": {"limits": {"local": "unlimited"}}},
        "departments": {"vendas": {"profile": "p"}, "suporte": {"profile": "p"}},
        "lines": {
            "1001": {"area_code": "11", "department": "vendas"},
            "2001": {"area_code": "21", "department": "suporte"},
        },
        "admins": [
            {"name": "ana", "role": "administrator"},
            {"name": "bruno", "role": "sub_administrator", "departments": ["vendas"]},
            {"name": "carla", "role": "read_only"},
        ],
    }


def test_roles_gate_reloads_and_room_actions_and_every_action_is_audited(server_factory, phone):
    srv = server_factory(**roles_config())
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; tone 700; wait_end 20")
    part = phone(srv.uri("conf"), "wait_media 5; dtmf 1111#; tone 440; wait_end 20", record=False)
    members = _members(srv, "demo", 2)
    leg = next(m["leg"] for m in members if m["role"] == "participant")
    time.sleep(1.0)  # the moderator hears the participant for a while

    denied = cli(srv, "room", "mute", "demo", str(leg), "--as", "carla")
    assert denied.returncode == 3 and "read-only" in denied.stderr
    nameless = cli(srv, "room", "mute", "demo", str(leg))
    assert nameless.returncode == 3 and "--as NAME" in nameless.stderr
    t_mute = time.monotonic()
    muted = cli(srv, "room", "mute", "demo", str(leg), "--as", "bruno")
    assert muted.returncode == 0, muted.stderr
    t_muted = time.monotonic()
    assert [m["muted"] for m in srv.status()["rooms"]["demo"]["members"] if m["leg"] == leg] == [
        True
    ]
    time.sleep(1.5)
    t_kick = time.monotonic()
    kicked = cli(srv, "room", "kick", "demo", str(leg), "--as", "ana")
    assert kicked.returncode == 0, kicked.stderr
    assert part.result()["hung_up_by"] == "remote"
    ended = cli(srv, "room", "end", "demo", "--as", "bruno")
    assert ended.returncode == 0, ended.stderr
    rm = mod.result()
    assert rm["hung_up_by"] == "remote"

    # The moderator heard the participant until the mute, and not after it.
    samples, rate = audio.load(mod.record)
    before = audio.segment(samples, rate, *window(rm, t_mute - 0.8, t_mute))
    after = audio.segment(samples, rate, *window(rm, t_muted + 0.5, t_kick))
    assert audio.band_fraction(before, rate, 440) > 0.2
    assert audio.band_fraction(after, rate, 440) < 0.02

    # A sub-administrator cannot change another department's line; the
    # running configuration stays as it was until an administrator reloads.
    lines = roles_config()["lines"]
    lines["2001"]["area_code"] = "31"
    _write(srv, lines=lines)
    refused = cli(srv, "reload", "--as", "bruno")
    assert refused.returncode == 3 and "not of suporte" in refused.stderr
    assert cli(srv, "reload").returncode == 3, "admins are listed: --as is required"
    done = cli(srv, "reload", "--as", "ana")
    assert done.returncode == 0 and "1 objects changed" in done.stdout, done.stderr

    audit = report(srv, "audit")
    assert [(a["object"], a["action"], a["by"], a["source"]) for a in audit] == [
        ("room:demo", "mute", "bruno", "command"),
        ("room:demo", "kick", "ana", "command"),
        ("room:demo", "end", "bruno", "command"),
        ("line:2001", "changed", "ana", "reload"),
    ]
    assert json.loads(audit[3]["changes"]) == {"area_code": ["21", "31"]}
    assert all(a["unix_user"] for a in audit), "the Unix user comes from the socket"
    as_csv = cli(srv, "report", "audit", "--csv", "--object", "line")
    assert as_csv.stdout.splitlines()[0].startswith("at,by,unix_user")
    assert len(as_csv.stdout.splitlines()) == 2
