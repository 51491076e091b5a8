"""Real calls over loopback: softphones dial the app server, key PINs, and we
check what each caller actually heard."""

from __future__ import annotations

import signal
import time

from tests import audio


def window(report: dict, start_abs: float, end_abs: float) -> tuple[float, float]:
    """Absolute monotonic times -> offsets into this phone's recording."""
    base = report["record_start"]
    return start_abs - base, end_abs - base


def hash_time(report: dict) -> float:
    return [t for d, _m, t in report["digits_sent"] if d == "#"][-1]


def test_two_callers_hear_each_other_not_themselves_nor_other_rooms(server, phone):
    talk = "wait_media 5; dtmf {pin}# {method}; tone {hz}; wait 5; hangup"
    a = phone(server.uri("conf"), talk.format(pin="1111", method="rfc2833", hz=440))
    b = phone(server.uri("conf"), talk.format(pin="9999", method="info", hz=700))
    c = phone(server.uri("conf"), talk.format(pin="8888", method="rfc2833", hz=1200))
    ra, rb, rc = a.result(), b.result(), c.result()
    for r in (ra, rb, rc):
        assert "error" not in r, r
    # The window where all three are in their rooms and sending tone.
    start = max(hash_time(r) for r in (ra, rb, rc)) + 0.6
    end = min(r["hangup_sent_at"] for r in (ra, rb, rc)) - 0.3
    assert end - start > 2.5

    heard = {}
    for name, r, p in (("a", ra, a), ("b", rb, b), ("c", rc, c)):
        samples, rate = audio.load(p.record)
        heard[name] = audio.segment(samples, rate, *window(r, start, end))
    rate = 8000
    assert audio.hears_tone(heard["a"], rate, 700), "A must hear B"
    assert audio.hears_tone(heard["b"], rate, 440), "B must hear A"
    assert audio.band_fraction(heard["a"], rate, 440) < 0.02, "A must not hear itself"
    assert audio.band_fraction(heard["b"], rate, 700) < 0.02, "B must not hear itself"
    for hz in (440, 700):
        assert audio.band_fraction(heard["c"], rate, hz) < 0.02, "nothing crosses rooms"
    for name in ("a", "b"):
        assert audio.band_fraction(heard[name], rate, 1200) < 0.02, "nothing crosses rooms"
    # C moderates an empty room: it hears nobody.
    assert audio.rms(heard["c"]) < 0.01


def test_wrong_pin_three_times_hears_prompts_then_is_hung_up(server, phone):
    # Each wrong try is keyed after the prompts had time to play a while.
    p = phone(
        server.uri("conf-en"),
        "wait_media 5; wait 1.5; dtmf 12#; wait 1.5; dtmf 34#; wait 1.5; dtmf 56#; wait_end 20",
    )
    r = p.result()
    assert r["hung_up_by"] == "remote", r
    assert "end_timeout" not in r
    samples, rate = audio.load(p.record)
    # The PIN prompt was heard before the first digit...
    first_digit = r["digits_sent"][0][2]
    assert audio.speech_like(
        audio.segment(samples, rate, 0.2, first_digit - r["record_start"]), rate
    )
    # ... and "invalid PIN" + "goodbye" after the last `#`, up to the hang-up.
    tail = audio.segment(samples, rate, hash_time(r) - r["record_start"] + 0.1, len(samples) / rate)
    assert audio.speech_like(tail, rate)
    log = server.log()
    assert log.count("pin failed") == 3
    assert "too many wrong PINs" in log


def test_pin_keyed_by_sip_info_and_by_both_methods_joins(server, phone):
    # `both` sends every digit by RFC 2833 and SIP INFO: counted once, the PIN
    # is still 1111 and not 11111111.
    a = phone(server.uri("conf"), "wait_media 5; dtmf 1111# info; tone 500; wait 4; hangup")
    b = phone(server.uri("conf"), "wait_media 5; dtmf 9999# both; tone 900; wait 4; hangup")
    ra, rb = a.result(), b.result()
    start = max(hash_time(ra), hash_time(rb)) + 0.6
    end = min(ra["hangup_sent_at"], rb["hangup_sent_at"]) - 0.3
    sa, rate = audio.load(a.record)
    sb, _ = audio.load(b.record)
    assert audio.hears_tone(audio.segment(sa, rate, *window(ra, start, end)), rate, 900)
    assert audio.hears_tone(audio.segment(sb, rate, *window(rb, start, end)), rate, 500)
    assert "pin failed" not in server.log()


def test_burst_of_20_callers_join_and_leave_without_leaks(server, phone):
    before = server.status()
    p = phone(
        server.uri("conf"),
        "wait_media 8; dtmf 1111#; tone 440; wait 2; hangup",
        record=False,
        calls=20,
        rate=20,
    )
    reports = p.result(timeout=90)
    assert len(reports) == 20
    assert [r for r in reports if "error" in r] == []
    assert server.log().count("join room=demo") == 20
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        st = server.status()
        if st["calls"] == 0:
            break
        time.sleep(0.1)
    assert st["calls"] == 0 and st["legs"] == 0
    assert st["rooms"] == {} and st["links"] == 0
    assert st["conf_ports"] == before["conf_ports"], "a conference slot leaked"
    assert len(st["join_latencies"]) == 20


def test_unknown_number_is_refused_with_404(server, phone):
    r = phone(server.uri("nobody"), "wait_media 3; hangup", record=False).result()
    assert r["code"] == 404


def test_silence_times_out_and_says_goodbye(server_factory, phone):
    srv = server_factory(ivr={"total_timeout": 1.5, "interdigit_timeout": 1.0, "max_tries": 1})
    p = phone(srv.uri("conf-en"), "wait_media 5; wait_end 20")
    r = p.result()
    assert r["hung_up_by"] == "remote"
    assert "no input" in srv.log()
    samples, rate = audio.load(p.record)
    assert audio.speech_like(
        audio.segment(samples, rate, len(samples) / rate - 1.5, len(samples) / rate), rate
    )


def test_sigterm_sends_bye_to_every_call_and_exits_0(server, phone):
    a = phone(server.uri("conf"), "wait_media 5; dtmf 1111#; wait_end 30", record=False)
    b = phone(server.uri("conf"), "wait_media 5; wait_end 30", record=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.status()["calls"] < 2:
        time.sleep(0.1)
    time.sleep(1.5)
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    for p in (a, b):
        r = p.result()
        assert r["hung_up_by"] == "remote" and r["code"] == 200, r
