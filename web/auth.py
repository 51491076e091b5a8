"""Web console authentication: scrypt password hashes, login throttling
(a lockout per name and source address, a small delay per name), server-side
sessions and CSRF tokens.

Nothing here knows about HTTP; `web.app` wires it to aiohttp. Every clock is
injected (`now`) so the tests can walk through a lockout window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

Clock = Callable[[], float]

SESSION_COOKIE = "ponte_session"
LOGIN_CSRF_COOKIE = "ponte_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"

# scrypt cost: n=2**14, r=8 takes 16 MiB and about 50 ms, the interactive-login
# figure of the scrypt paper (and of Python's own documentation).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
_SALT_BYTES, _KEY_BYTES = 16, 32
_MAXMEM = 256 * 1024 * 1024
_FORMAT = re.compile(r"^scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The self-describing scrypt hash of `password`:
    `scrypt$n=16384,r=8,p=1$<salt base64>$<key base64>`."""
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(_SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_KEY_BYTES
    )
    return f"scrypt$n={n},r={r},p={p}${_b64(salt)}${_b64(key)}"


def is_hash(stored: str) -> bool:
    """Whether `stored` is in the format hash_password writes."""
    return _parse(stored) is not None


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    m = _FORMAT.match(stored or "")
    if not m:
        return None
    n, r, p = (int(x) for x in m.group(1, 2, 3))
    # Refuse costs that are not a power of two or would take the box down.
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        return None
    try:
        salt = base64.b64decode(m.group(4), validate=True)
        key = base64.b64decode(m.group(5), validate=True)
    except ValueError:
        return None
    if not salt or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


# Verified against when the name is unknown, so a wrong name costs as much as
# a wrong password and the timing does not tell which names exist.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches the stored hash (constant-time compare).
    A missing or malformed hash never matches, but costs the same time."""
    parsed = _parse(stored) if stored else None
    n, r, p, salt, key = parsed or _parse(_DUMMY)  # type: ignore[misc]
    try:
        got = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=len(key)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(got, key) and parsed is not None


class LoginLockout:
    """`limit` failed logins for one key within `window` seconds lock the key
    out until `window` seconds after the last of them. While locked, even the
    right password is refused and attempts do not extend the lock. Names that
    do not exist are counted the same way, so the answer never reveals them.

    The web console keys it by name and source address (LoginThrottle): keyed
    by name alone, anyone could lock the real admin out."""

    def __init__(
        self,
        limit: int = 5,
        window: float = 600.0,
        *,
        now: Clock = time.time,
        max_names: int = 10000,
    ) -> None:
        self.limit, self.window, self.now = limit, window, now
        self.max_names = max_names
        self._failures: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}

    def locked(self, name: str) -> bool:
        """Whether a login as `name` is refused right now."""
        until = self._until.get(name)
        if until is None:
            return False
        if self.now() >= until:
            del self._until[name]
            self._failures.pop(name, None)
            return False
        return True

    def retry_after(self, name: str) -> float:
        """Seconds until `name` may try again (0 when not locked)."""
        return max(0.0, self._until.get(name, 0.0) - self.now()) if self.locked(name) else 0.0

    def failure(self, name: str) -> bool:
        """Count a failed login; True when this one locked the name out."""
        if self.locked(name):
            return False
        t = self.now()
        seen = self._failures.setdefault(name, deque())
        while seen and seen[0] <= t - self.window:
            seen.popleft()
        seen.append(t)
        locked = len(seen) >= self.limit
        if locked:
            self._until[name] = t + self.window
            del self._failures[name]
        self._prune(t)
        return locked

    def success(self, name: str) -> None:
        """A good login clears the name's failures."""
        self._failures.pop(name, None)

    def _prune(self, t: float) -> None:
        if len(self._until) > self.max_names:
            for key in [k for k, until in self._until.items() if t >= until]:
                del self._until[key]
        if len(self._failures) <= self.max_names:
            return
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= t - self.window]:
            del self._failures[key]
        while len(self._failures) > self.max_names:  # still flooded: forget the oldest
            del self._failures[next(iter(self._failures))]


_NAME_FAILURES_KEPT = 256  # per name: LoginThrottle.failures() counts up to this


def _source_key(name: str, source: str) -> str:
    # NUL never reaches a login name or an address, so the pair stays unambiguous.
    return f"{name}\0{source}"


class LoginThrottle:
    """Who may try a password now, and how long to make them wait first.

    Failures lock a (name, source address) pair, never a name: a name locked by
    whoever guesses would let anyone lock the real admin out. `limit` failures
    of one pair within `window` seconds refuse that pair for `window` seconds
    (a LoginLockout keyed by the pair); every other source still logs in.

    Guessing spread over many addresses is slowed instead by a per-name delay,
    applied to every try of that name whatever its source: none for the first
    `free` failures within `window` (typos), then `step` seconds doubling with
    each further failure up to `max_delay`. It is a wait, never a refusal, so
    the real admin with the right password from a clean source gets in after at
    most `max_delay` seconds. A good login clears the name's count.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 600.0,
        *,
        free: int = 3,
        step: float = 0.5,
        max_delay: float = 3.0,
        now: Clock = time.time,
        max_names: int = 10000,
    ) -> None:
        self.window, self.now = window, now
        self.free, self.step, self.max_delay = free, step, max_delay
        self.max_names = max_names
        self.pairs = LoginLockout(limit, window, now=now, max_names=max_names)
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, name: str, source: str) -> float:
        """Seconds until `source` may try `name` again (0: it may now)."""
        return self.pairs.retry_after(_source_key(name, source))

    def locked(self, name: str, source: str) -> bool:
        """Whether a login as `name` from `source` is refused right now."""
        return self.pairs.locked(_source_key(name, source))

    def failures(self, name: str) -> int:
        """Failed logins as `name` from any source within the window."""
        seen = self._failures.get(name)
        if not seen:
            return 0
        t = self.now()
        while seen and seen[0] <= t - self.window:
            seen.popleft()
        return len(seen)

    def delay(self, name: str) -> float:
        """Seconds to wait before checking a password for `name` (0..max_delay)."""
        extra = self.failures(name) - self.free
        if extra < 0:
            return 0.0
        # min() before the power keeps a flood's count from building a huge float.
        return min(self.max_delay, self.step * 2.0 ** min(extra, 32))

    def failure(self, name: str, source: str) -> bool:
        """Count a failed login; True when it locked this name from this source."""
        t = self.now()
        # Bounded: the delay stops growing long before, and a name under a
        # flood must not keep every failure's time.
        seen = self._failures.setdefault(name, deque(maxlen=_NAME_FAILURES_KEPT))
        while seen and seen[0] <= t - self.window:
            seen.popleft()
        seen.append(t)
        self._prune(t)
        return self.pairs.failure(_source_key(name, source))

    def success(self, name: str, source: str) -> None:
        """A good login clears the pair's failures and the name's delay."""
        self.pairs.success(_source_key(name, source))
        self._failures.pop(name, None)

    def _prune(self, t: float) -> None:
        # A flood of made-up names must not grow memory without bound.
        if len(self._failures) <= self.max_names:
            return
        for key in [k for k, v in self._failures.items() if not v or v[-1] <= t - self.window]:
            del self._failures[key]
        while len(self._failures) > self.max_names:
            del self._failures[next(iter(self._failures))]


class RateLimit:
    """At most `limit` events per key in a sliding `window` (seconds)."""

    def __init__(self, limit: int, window: float, *, now: Clock = time.time) -> None:
        self.limit, self.window, self.now = limit, window, now
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """Count one event for `key`; False (and not counted) past the limit."""
        t = self.now()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= t - self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            return False
        seen.append(t)
        if len(self._seen) > 10000:
            for k in [k for k, v in self._seen.items() if not v or v[-1] <= t - self.window]:
                del self._seen[k]
        return True

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may have one more event (0: it may now)."""
        seen = self._seen.get(key)
        if not seen or len(seen) < self.limit:
            return 0.0
        return max(0.0, seen[-self.limit] + self.window - self.now())


def new_token() -> str:
    """A random 32-byte token, URL-safe."""
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens; False when either is missing."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


@dataclass
class Session:
    """One logged-in browser: the admin's name and its CSRF token."""

    admin: str
    csrf: str
    created: float
    expires: float
    token: str = field(repr=False, default="")
    stamp: str = field(repr=False, default="")  # of the credential it was opened with


def credential_stamp(password_hash: str | None) -> str:
    """A short digest of a stored hash: sessions opened with an older one end."""
    return hashlib.sha256((password_hash or "").encode("utf-8")).hexdigest()[:16]


def _key(token: str) -> str:
    # The store is keyed by a digest, so a dict lookup leaks nothing useful
    # about the token's bytes through timing.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionStore:
    """Server-side sessions: a random cookie token -> Session, with expiry."""

    def __init__(self, *, now: Clock = time.time) -> None:
        self.now = now
        self._sessions: dict[str, Session] = {}

    def create(self, admin: str, minutes: float, stamp: str = "") -> Session:
        """A fresh session for `admin`, valid `minutes` from now. `stamp` names
        the credential used (see credential_stamp), so a password change ends it."""
        t = self.now()
        self._expire(t)
        token = new_token()
        s = Session(
            admin=admin,
            csrf=new_token(),
            created=t,
            expires=t + minutes * 60,
            token=token,
            stamp=stamp,
        )
        self._sessions[_key(token)] = s
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of a cookie token, or None (unknown or expired)."""
        if not token or len(token) > 256:
            return None
        key = _key(token)
        s = self._sessions.get(key)
        if s is None:
            return None
        if self.now() >= s.expires:
            del self._sessions[key]
            return None
        return s

    def delete(self, token: str | None) -> None:
        """End a session (logout)."""
        if token:
            self._sessions.pop(_key(token), None)

    def drop_admin(self, admin: str) -> None:
        """End every session of one admin."""
        for key in [k for k, s in self._sessions.items() if s.admin == admin]:
            del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, t: float) -> None:
        for key in [k for k, s in self._sessions.items() if t >= s.expires]:
            del self._sessions[key]
