"""Run Debian's svcrack (sipvicious 0.3.3) from a chosen source address.

svcrack parses `-b/--bindingip` but never hands it to its cracker class, so
it always binds 0.0.0.0 and, on loopback, sends from 127.0.0.1: the app
server's own address, which Kamailio trusts and never flood-checks. The
attack suite needs the attacker on its own 127.x address, so this wrapper
passes the option through and then runs svcrack's unmodified `main()`.

Run it with the system Python that sipvicious is installed for:
    /usr/bin/python3 tests/attacks/svcrack_bound.py -b 127.30.0.2 -u 1001 -d words.txt ...
"""

from __future__ import annotations

import sys
from typing import Any

sys.path.insert(0, "/usr/share/sipvicious")  # where Debian puts the package

from sipvicious import svcrack  # noqa: E402 - needs the path above


def main() -> int:
    """svcrack's own main(), with -b reaching the socket."""
    bind = sys.argv[sys.argv.index("-b") + 1] if "-b" in sys.argv else ""
    original = svcrack.ASipOfRedWine.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("bindingip", bind)
        original(self, *args, **kwargs)

    svcrack.ASipOfRedWine.__init__ = init
    sys.argv[0] = "svcrack"
    return svcrack.main() or 0


if __name__ == "__main__":
    raise SystemExit(main())
