"""Live reload: new settings for new calls, nothing dropped, bad files refused."""

from __future__ import annotations

import time

import yaml

from tests import ports
from tests.attack_helpers import wait_for
from tests.harness import cli
from tests.pbx_helpers import pbx_overrides, proxy


def test_reload_adds_a_room_and_changes_a_password_without_dropping_calls(server_factory, phone):
    srv = server_factory(**pbx_overrides())
    pid_file = srv.log_path.parent / "state" / "kamailio" / "kamailio.pid"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not pid_file.exists():
        time.sleep(0.05)  # Kamailio writes it a moment after ponte is up
    kam_pid = pid_file.read_text()
    talking = phone(srv.uri("conf"), "wait_media 5; dtmf 9999#; wait 6; hangup", record=False)
    time.sleep(1.5)
    cfg = dict(srv.config)
    cfg["rooms"] = [
        *cfg["rooms"],
        {"name": "new", "participant_pin": "3333", "moderator_pin": "7777"},
    ]
    cfg["extensions"] = [dict(e) for e in cfg["extensions"]]
    cfg["extensions"][1]["password"] = "a-brand-New-secret"
    srv.config_path.write_text(yaml.safe_dump(cfg))
    r = cli(srv, "reload")
    assert r.returncode == 0, r.stderr
    newcomer = phone(srv.uri("conf"), "wait_media 5; dtmf 7777#; wait 1; hangup", record=False)
    assert newcomer.result()["hung_up_by"] == "local"
    assert "join room=new role=moderator" in srv.log()
    assert talking.result()["hung_up_by"] == "local", "the call in progress went on"
    new_pw = phone(
        "",
        "",
        record=False,
        bind=ports.loopback_ip(),
        extra=["--register", f"1002:a-brand-New-secret@{proxy(srv)}"],
    ).result()
    assert new_pw["registration"]["code"] == 200
    kam_dir = srv.log_path.parent / "state" / "kamailio"
    assert (kam_dir / "kamailio.pid").read_text() == kam_pid, "Kamailio was not restarted"


def test_broken_reload_keeps_the_old_pins(server, phone):
    good = server.config_path.read_text()
    server.config_path.write_text(good.replace("participant_pin: '1111'", "participant_pin: [1111"))
    r = cli(server, "reload")
    assert r.returncode == 2 and str(server.config_path) in r.stderr
    # SIGHUP with the broken file: refused and logged, the server runs on.
    server.proc.send_signal(1)
    time.sleep(0.5)
    assert "reload refused, configuration unchanged" in server.log()
    p = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 1; hangup", record=False)
    assert p.result()["hung_up_by"] == "local"
    assert "join room=demo role=participant" in server.log()


def test_a_reload_naming_a_holiday_calendar_the_package_lacks_is_refused(server, phone):
    """A subdivision the holidays package lacks loaded before, and every call out
    then failed at its decision; now the reload is refused with the reason, and
    the server goes on with the calendar it had."""
    cfg = dict(server.config)
    cfg["holidays"] = {"country": "BR", "subdivision": "ZZ"}
    server.config_path.write_text(yaml.safe_dump(cfg))
    r = cli(server, "reload")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "holidays.subdivision 'ZZ' is not one of BR's" in r.stderr, r.stderr
    # SIGHUP: the server reads the file itself, refuses it and runs on.
    server.proc.send_signal(1)
    wait_for(lambda: "reload refused" in server.log(), 10, "the server's refusal")
    assert "holidays.subdivision 'ZZ'" in server.log().split("reload refused", 1)[1]
    p = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait 1; hangup", record=False)
    assert p.result()["hung_up_by"] == "local"
    assert "join room=demo role=participant" in server.log()
