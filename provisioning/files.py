"""File modes for what holds secrets.

`ponte` sets its umask to 0027 at start, whatever shell or unit starts it,
so nothing it writes is world-readable. Files that hold secrets (SIP and
trunk passwords, admin hashes, the Record-Route secret, the records and
their backups) are further made 0600: readable by the service's user alone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

UMASK = 0o027
SECRET_MODE = 0o600
# SQLite's companions of a database file hold the same data.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def set_umask() -> None:
    """The process's umask: group may read, others get nothing."""
    os.umask(UMASK)


def private(path: Path | str) -> None:
    """Make a secret-holding file (and SQLite's sidecars of it) mode 0600."""
    path = Path(path)
    for p in (path, *(Path(f"{path}{s}") for s in SQLITE_SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(p, SECRET_MODE)


def create_private(path: Path) -> int:
    """Open a new file for writing, created 0600 from the start (no window
    in which another user could open it)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_MODE)
