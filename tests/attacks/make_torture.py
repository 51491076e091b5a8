"""Write tests/attacks/torture/*.sip: the RFC 4475 torture messages, re-created by hand.

Run it once after editing a message: `.venv/bin/python -m tests.attacks.make_torture`.
The files are the data the attack suite sends; this script is their source, so
every CRLF is explicit and every Content-Length is computed, never typed.

Each message keeps the RFC's name and the defect (or oddity) it exercises, but
is aimed at our own appliance instead of example.com hosts:

* `{{target}}` is replaced at send time with the receiver's host:port (Kamailio
  or the app server), so the Request-URI reaches real routing: INVITEs ask for
  `conf`, the conference access number, so an invalid INVITE that a parser
  waved through would be answered 200 by the IVR, which the test would see.
* `{{local}}` is the sender's own 127.x address and port: the top Via and the
  Contact point there, so every answer comes back to the test and nothing, not
  even a DNS lookup, ever leaves the loopback interface.
* `{{id}}` is a fresh token per send (Call-ID, branch and tags), so sending the
  same file to both receivers never matches an old transaction.

SDP bodies announce 127.0.0.1 port 9 (discard): if a call is answered, its
RTP goes nowhere. Hosts that nothing resolves (From/To display URIs) keep the
RFC's example.com names; no receiver looks them up.

`index.json` lists every message with its RFC section, whether the RFC calls
it valid, and whether it is a request or a response.

The messages live by family, in RFC 4475's order: torture_parser_valid.py
(3.1.1), torture_parser_invalid.py (3.1.2), torture_semantics.py (3.2 to 3.4)
and torture_limits.py (not in the RFC); torture_message.py holds what they share.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.attacks import (
    torture_limits,
    torture_parser_invalid,
    torture_parser_valid,
    torture_semantics,
)
from tests.attacks.torture_message import Torture

HERE = Path(__file__).resolve().parent / "torture"

MESSAGES: list[Torture] = [
    *torture_parser_valid.MESSAGES,
    *torture_parser_invalid.MESSAGES,
    *torture_semantics.MESSAGES,
    *torture_limits.MESSAGES,
]


def write(folder: Path = HERE) -> None:
    """(Re)write every .sip file and index.json."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {}
    for m in MESSAGES:
        (folder / f"{m.name}.sip").write_bytes(m.data)
        index[m.name] = {
            "section": m.section,
            "valid": m.valid,
            "kind": m.kind,
            "method": m.method,
            "what": m.what,
        }
    (folder / "index.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {len(MESSAGES)} messages to {HERE}")
