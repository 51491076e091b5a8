"""What Kamailio and rtpengine share as children of `ponte serve`.

Both run in their own process group (creator, main and workers stop as
one), die with ponte even when it is killed with SIGKILL, and are stopped
with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child (a Popen preexec_fn): SIGTERM when ponte dies, even by
    SIGKILL (Linux prctl). An orphan would keep its ports and relay to a dead
    app server."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_group(
    proc: subprocess.Popen[bytes], name: str, log: logging.Logger, timeout: float = 5.0
) -> None:
    """SIGTERM to the child's process group, then SIGKILL after `timeout`."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.info("%s stopped (exit %s)", name, proc.returncode)
