"""What the console's handlers share: one State per app, and the keys that
hold it and a request's session and admin."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from provisioning.schema import Admin
from web.auth import Clock, LoginThrottle, RateLimit, Session, SessionStore
from web.backend import Backend
from web.hub import EventHub

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class State:
    """Everything the handlers share (one per app)."""

    backend: Backend
    hub: EventHub
    now: Clock
    sessions: SessionStore
    lockout: LoginThrottle
    login_ip: RateLimit
    join_ip: RateLimit
    # How the per-name login delay is waited (the tests record it instead).
    sleep: Sleep = asyncio.sleep
    # (name, source) pairs whose password is being checked: one try at a time
    # per pair, so parallel tries cannot race past the pair's lockout.
    verifying: set[tuple[str, str]] = field(default_factory=set)
    sockets: weakref.WeakSet[web.WebSocketResponse] = field(default_factory=weakref.WeakSet)


STATE: web.AppKey[State] = web.AppKey("ponte_state", State)
SESSION: web.RequestKey[Session] = web.RequestKey("ponte_session", Session)
ADMIN: web.RequestKey[Admin] = web.RequestKey("ponte_admin", Admin)


def _state(request: web.Request) -> State:
    return request.app[STATE]
