"""Web console authentication: scrypt hashes, the login lockout and throttle, sessions."""

from __future__ import annotations

import base64
import io

import pytest

from ponte.cli import main
from web.auth import (
    LoginLockout,
    LoginThrottle,
    RateLimit,
    SessionStore,
    credential_stamp,
    hash_password,
    is_hash,
    same_token,
    verify_password,
)


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def test_hash_is_self_describing_salted_and_never_the_clear_text() -> None:
    a = hash_password("correct horse battery")
    b = hash_password("correct horse battery")
    assert a != b  # a fresh salt each time
    assert "correct horse" not in a
    scheme, params, salt, key = a.split("$")
    assert scheme == "scrypt" and params == "n=16384,r=8,p=1"
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert is_hash(a)


def test_verify_right_and_wrong_password() -> None:
    stored = hash_password("correct horse battery", n=1024)
    assert verify_password("correct horse battery", stored)
    assert not verify_password("correct horse batterY", stored)
    assert not verify_password("", stored)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "correct horse battery",  # clear text in the YAML is never accepted as a hash
        "scrypt$n=1000,r=8,p=1$AAAA$AAAA",  # n not a power of two
        "scrypt$n=16384,r=8,p=1$!!!$AAAA",
        "bcrypt$2b$12$abc",
        "scrypt$n=4194304,r=8,p=1$QUFBQUFBQUFBQUFBQUFBQQ==$" + "A" * 44,  # absurd cost
    ],
)
def test_malformed_or_missing_hash_never_matches(stored: str | None) -> None:
    assert not verify_password("correct horse battery", stored)


def test_hash_refuses_an_empty_password() -> None:
    with pytest.raises(ValueError):
        hash_password("")


def test_lockout_after_five_failures_in_ten_minutes_then_lifts() -> None:
    clock = Clock()
    lock = LoginLockout(5, 600, now=clock)
    for i in range(4):
        assert not lock.failure("ana")
        assert not lock.locked("ana"), i
        clock.advance(30)
    assert lock.failure("ana")  # the fifth, within the window
    assert lock.locked("ana")
    assert not lock.locked("bia")  # only that name
    clock.advance(599)
    assert lock.locked("ana")
    assert lock.retry_after("ana") == pytest.approx(1)
    assert not lock.failure("ana")  # tries while locked do not extend the lock
    clock.advance(1)
    assert not lock.locked("ana")
    # The old failures are gone with the lock: one more is not a new lockout.
    assert not lock.failure("ana")
    assert not lock.locked("ana")


def test_failures_spread_beyond_the_window_do_not_lock() -> None:
    clock = Clock()
    lock = LoginLockout(5, 600, now=clock)
    for _ in range(10):
        lock.failure("ana")
        clock.advance(151)  # at most 4 failures in any 10 minutes
        assert not lock.locked("ana")


def test_success_clears_the_failures() -> None:
    clock = Clock()
    lock = LoginLockout(5, 600, now=clock)
    for _ in range(4):
        lock.failure("ana")
    lock.success("ana")
    for _ in range(4):
        lock.failure("ana")
    assert not lock.locked("ana")


def test_unknown_names_are_counted_like_known_ones() -> None:
    clock = Clock()
    lock = LoginLockout(5, 600, now=clock, max_names=50)
    for _ in range(5):
        lock.failure("nobody")
    assert lock.locked("nobody")
    for i in range(500):  # a flood of names is bounded
        lock.failure(f"x{i}")
    assert len(lock._failures) <= 51


def test_throttle_locks_a_name_from_one_source_only() -> None:
    clock = Clock()
    th = LoginThrottle(5, 600, now=clock)
    for i in range(5):
        assert not th.locked("ana", "10.0.0.1"), i
        locked = th.failure("ana", "10.0.0.1")
    assert locked and th.locked("ana", "10.0.0.1")
    assert th.retry_after("ana", "10.0.0.1") == 600
    assert not th.locked("ana", "10.0.0.2"), "the real ana, elsewhere"
    assert not th.locked("bia", "10.0.0.1"), "another name from there"
    # Five failures from five sources lock no one.
    for n in range(3, 8):
        th.failure("bia", f"10.0.0.{n}")
    assert not any(th.locked("bia", f"10.0.0.{n}") for n in range(1, 9))
    clock.advance(600)
    assert not th.locked("ana", "10.0.0.1")


def test_throttle_delay_grows_with_failures_from_anywhere_and_stays_small() -> None:
    clock = Clock()
    th = LoginThrottle(5, 600, now=clock)
    delays = []
    for n in range(12):
        delays.append(th.delay("ana"))
        th.failure("ana", f"10.0.{n}.1")
    assert delays == [0, 0, 0, 0.5, 1, 2, 3, 3, 3, 3, 3, 3]
    assert th.delay("bia") == 0
    for _ in range(10_000):  # however many, never more than max_delay
        th.failure("ana", "10.1.0.1")
    assert th.delay("ana") == 3.0
    assert th.failures("ana") == 256, "a flood keeps a bounded count"
    # A good login clears the name's count; so does time.
    th.success("ana", "10.9.9.9")
    assert th.delay("ana") == 0
    for n in range(5):
        th.failure("ana", f"10.2.{n}.1")
    assert th.delay("ana") == 2.0
    clock.advance(600)
    assert th.delay("ana") == 0 and th.failures("ana") == 0


def test_throttle_memory_is_bounded_under_a_flood_of_names() -> None:
    clock = Clock()
    th = LoginThrottle(5, 600, now=clock, max_names=50)
    for i in range(500):
        th.failure(f"x{i}", "10.0.0.1")
    assert len(th._failures) <= 51 and len(th.pairs._failures) <= 51


def test_rate_limit_says_when_to_come_back() -> None:
    clock = Clock()
    rl = RateLimit(3, 60, now=clock)
    for _ in range(3):
        assert rl.retry_after("a") == 0
        rl.allow("a")
        clock.advance(10)
    assert not rl.allow("a")
    assert rl.retry_after("a") == 30  # the first of the three leaves the window then
    clock.advance(30)
    assert rl.retry_after("a") == 0 and rl.allow("a")


def test_sessions_expire_and_are_keyed_by_a_digest() -> None:
    clock = Clock()
    store = SessionStore(now=clock)
    s = store.create("ana", 480, credential_stamp("h"))
    assert len(s.token) >= 43 and len(s.csrf) >= 43 and s.token != s.csrf
    assert s.token not in store._sessions  # the store holds a digest, not the token
    assert store.get(s.token) is s
    assert store.get(s.token + "x") is None and store.get(None) is None
    clock.advance(480 * 60 - 1)
    assert store.get(s.token) is s
    clock.advance(1)
    assert store.get(s.token) is None
    t = store.create("ana", 10)
    store.delete(t.token)
    assert store.get(t.token) is None


def test_same_token_and_rate_limit() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd") and not same_token("", "") and not same_token(None, "a")
    clock = Clock()
    rl = RateLimit(5, 60, now=clock)
    assert all(rl.allow("1.2.3.4") for _ in range(5))
    assert not rl.allow("1.2.3.4")
    assert rl.allow("5.6.7.8")
    clock.advance(60)
    assert rl.allow("1.2.3.4")


def test_ponte_passwd_prints_a_hash_of_the_password_read_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert main(["passwd", "ana"]) == 0
    out = capsys.readouterr().out.strip()
    assert is_hash(out) and verify_password("correct horse battery", out)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["passwd", "ana"]) == 1
    assert capsys.readouterr().out == ""
