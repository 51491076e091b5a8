"""Cell and table formatting shared by the RESULTS.md sections."""

from __future__ import annotations

import math
from typing import Any

Result = dict[str, Any]


def f(x: Any, digits: int = 1) -> str:
    """A number for a table cell ("n/a" for missing or NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    """A Markdown table; `align` has one of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join("---" if a == "l" else "---:" for a in align) + "|")
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _err(r: Result | None) -> list[str]:
    """The note for a bench that did not produce numbers."""
    if r is None:
        return ["_Not run._", ""]
    if r.get("failed"):
        return [f"_Did not finish: {r['failed']}_", ""]
    return []
