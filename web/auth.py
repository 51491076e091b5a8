"""Web console authentication: scrypt password hashes, login lockout,
server-side sessions and CSRF tokens.

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
    """`limit` failed logins for one name within `window` seconds lock the name
    out until `window` seconds after the last of them. While locked, even the
    right password is refused and attempts do not extend the lock. Names that
    do not exist are counted the same way, so the answer never reveals them."""

    def __init__(
        self, limit: int = 5, window: float = 600.0, *, now: Clock = time.time, max_names=10000
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
