"""Access profiles against a running appliance: the control socket (`ponte
reload`, `ponte room`) and the web console refuse alike what an admin's
profile does not grant, and the refused attempt changes nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import yaml

from tests import ports
from tests.consoleclient import ConsoleClient
from tests.harness import cli, report
from tests.test_admin_calls import _members, roles_config
from web.auth import hash_password

PASSWORD = "correct horse battery"


def _config(port: int) -> dict[str, Any]:
    cfg = roles_config()
    hashed = hash_password(PASSWORD)
    cfg["access_profiles"] = {"operator": ["reports", "room_actions"], "maintainer": ["reload"]}
    cfg["admins"] = [
        {"name": name, "role": "administrator", "profile": profile, "password_hash": hashed}
        for name, profile in (("olga", "operator"), ("mario", "maintainer"))
    ]
    cfg["web"] = {"listen": f"127.0.0.1:{port}"}
    return cfg


def test_an_admin_without_reload_cannot_reload_by_socket_or_console(server_factory, phone):
    port = ports.allocate(1)
    base = f"http://127.0.0.1:{port}"
    cfg = _config(port)
    srv = server_factory(**cfg)
    mod = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait_end 30", record=False)
    _members(srv, "demo", 1)

    # The file on disk now changes a line: whoever reloads it applies that.
    on_disk = yaml.safe_load(srv.config_path.read_text())
    on_disk["lines"]["2001"]["area_code"] = "31"
    srv.config_path.write_text(yaml.safe_dump(on_disk))

    # olga (operator: reports, room actions) may not reload, by either door.
    refused = cli(srv, "reload", "--as", "olga")
    assert refused.returncode == 3, refused.stderr
    assert "does not include reload" in refused.stderr
    # mario (maintainer: reload) may not act on a room, nor read reports.
    locked = cli(srv, "room", "lock", "demo", "--as", "mario")
    assert locked.returncode == 3 and "does not include room_actions" in locked.stderr
    no_report = cli(srv, "report", "audit", "--as", "mario")
    assert no_report.returncode == 3 and "does not include reports" in no_report.stderr

    async def console() -> dict[str, Any]:
        got: dict[str, Any] = {}
        olga, mario = ConsoleClient(base), ConsoleClient(base)
        try:
            assert await olga.login("olga", PASSWORD) == 303
            assert await mario.login("mario", PASSWORD) == 303
            got["olga.reload"] = await olga.post("/api/reload")
            got["mario.lock"] = await mario.act("demo", "lock")
            got["mario.usage"] = (await mario.get("/usage"))[0]
            got["after_refusals"] = srv.status()["rooms"]["demo"]["locked"]
            got["audit_after_refusals"] = report(srv, "audit", "--as", "olga")
            # What the profiles do grant goes through, by the same doors.
            got["olga.lock"] = await olga.act("demo", "lock")
            got["mario.reload"] = await mario.post("/api/reload")
        finally:
            await olga.close()
            await mario.close()
        return got

    got = asyncio.run(console())
    status, answer = got["olga.reload"]
    assert status == 403 and answer["denied"] and "does not include reload" in answer["error"]
    status, answer = got["mario.lock"]
    assert status == 403 and "may not act" in answer["error"]
    assert got["mario.usage"] == 403
    # Nothing changed: the room is open, no audit row, the line unchanged
    # until mario's reload below counts it as the one change.
    assert got["after_refusals"] is False
    assert got["audit_after_refusals"] == []
    status, answer = got["olga.lock"]
    assert status == 200 and answer["by"] == "olga"
    assert srv.status()["rooms"]["demo"]["locked"] is True
    status, answer = got["mario.reload"]
    assert status == 200 and answer["changes"] == 1 and answer["by"] == "mario", answer

    audit = report(srv, "audit", "--as", "olga")
    assert [(a["object"], a["action"], a["by"], a["source"]) for a in audit] == [
        ("room:demo", "lock", "olga", "web"),
        ("line:2001", "changed", "mario", "web"),
    ]
    ended = cli(srv, "room", "end", "demo", "--as", "olga")
    assert ended.returncode == 0, ended.stderr
    assert mod.result()["hung_up_by"] == "remote"
    assert "refused" in srv.log()
