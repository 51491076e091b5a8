"""The PIN lockout's clock, which a test may move forward.

The lockout counts on the wall clock (epoch seconds: the one clock app-server
nodes sharing a records database agree on; see ponte/pinshare.py), and a
real-call test of the 15-minute lockout needs a way to move this clock alone,
without moving the billing and history times with it.

Test mode: PONTE_TEST_LOCKOUT_CLOCK=/path/to/file makes the lockout's clock
the base clock plus the seconds written in that file (read at each use;
e.g. `echo 901 > file` ends a 15-minute lockout at once). Nothing else
(timers, prompts, billing) is affected. Guard rails, because moving this
clock forward lifts lockouts:

* ignored, with an error in the log, when the server runs under systemd
  (INVOCATION_ID or NOTIFY_SOCKET set), which is how the appliance runs;
* the file must belong to the server's own user and be writable by no one
  else, else it is not read;
* the offset only ever grows: the clock never runs backwards;
* a warning at start says that the test mode is on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger("ponte.lockout_clock")

ENV = "PONTE_TEST_LOCKOUT_CLOCK"
SYSTEMD = ("INVOCATION_ID", "NOTIFY_SOCKET")  # set by systemd for a service it starts


class LockoutClock:
    """Seconds for the PIN lockout: `base()` (the wall clock) plus a test offset."""

    def __init__(self, base: Callable[[], float], skew_file: Path | None = None) -> None:
        self.base = base
        self.skew_file = skew_file
        self.offset = 0.0
        self._complained = False

    @classmethod
    def from_env(
        cls, base: Callable[[], float], environ: Mapping[str, str] | None = None
    ) -> LockoutClock:
        """The clock, in test mode only if PONTE_TEST_LOCKOUT_CLOCK is set
        outside systemd."""
        env = os.environ if environ is None else environ
        path = env.get(ENV)
        if not path:
            return cls(base)
        if any(name in env for name in SYSTEMD):
            log.error("%s is ignored under systemd: it is for tests only", ENV)
            return cls(base)
        log.warning(
            "TEST MODE: the PIN lockout's clock is moved by %s (%s=%s); never in production",
            path,
            ENV,
            path,
        )
        return cls(base, Path(path))

    def now(self) -> float:
        """The lockout's time: the base clock plus the test offset."""
        if self.skew_file is not None:
            self._read_offset(self.skew_file)
        return self.base() + self.offset

    def _read_offset(self, path: Path) -> None:
        try:
            st = path.stat()
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                if not self._complained:
                    self._complained = True
                    log.error("%s is not ours alone (owner or mode): not read", path)
                return
            value = float(path.read_text().strip() or 0)
        except (OSError, ValueError):
            return  # no file yet, or half written: keep the last offset
        if math.isfinite(value) and value > self.offset:
            self.offset = value
