"""What changed between two configurations, object by object, for the audit.

Secrets (passwords, PINs, password hashes) are reported as changed, never
with their values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from provisioning.schema import Config

# Lists whose items are objects of their own, and the field that names them.
KEYED_LISTS = {
    "rooms": ("room", "name"),
    "extensions": ("extension", "number"),
    "trunks": ("trunk", "name"),
    "access_numbers": ("access_number", "user"),
    "admins": ("admin", "name"),
}
# Mappings whose entries are objects of their own.
KEYED_MAPS = {
    "dids": "did",
    "lines": "line",
    "departments": "department",
    "profiles": "profile",
}
SECRET_FIELDS = frozenset(
    {
        "password",
        "participant_pin",
        "moderator_pin",
        "counter_pin",
        "counter_pins",  # a list whose items hold PINs: masked whole
        "password_hash",
    }
)
HIDDEN = "(secret)"


@dataclass
class Change:
    """One changed object: its kind and name, and old/new per changed field."""

    kind: str
    name: str
    action: str  # added | removed | changed
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def object(self) -> str:
        """`kind:name`, e.g. room:demo, line:1001, settings:sip."""
        return f"{self.kind}:{self.name}"

    def as_json(self) -> str:
        """The field changes as JSON: {field: [old, new]}."""
        return json.dumps({k: list(v) for k, v in self.fields.items()}, ensure_ascii=False)

    def describe(self) -> str:
        """One line for a terminal: `field: old -> new; ...`."""
        return "; ".join(f"{k}: {_show(o)} -> {_show(n)}" for k, (o, n) in self.fields.items())


def _show(value: Any) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and scalars stay whole."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _masked(key: str, old: Any, new: Any) -> tuple[Any, Any]:
    """Secrets: say that they were set, changed or removed, never what they are."""
    if key.rpartition(".")[2] not in SECRET_FIELDS:
        return old, new
    if old is None:
        return None, "(set)"
    if new is None:
        return HIDDEN, None
    return HIDDEN, "(changed)"


def _compare(kind: str, name: str, old: Any, new: Any) -> Change | None:
    if old == new:
        return None
    if old is None:
        action, a, b = "added", {}, _flat(new)
    elif new is None:
        action, a, b = "removed", _flat(old), {}
    else:
        action, a, b = "changed", _flat(old), _flat(new)
    fields = {}
    for key in sorted(set(a) | set(b), key=lambda k: (k not in a, k)):
        if a.get(key) != b.get(key):
            fields[key] = _masked(key, a.get(key), b.get(key))
    return Change(kind, name, action, fields)


def diff_configs(old: Config, new: Config) -> list[Change]:
    """Every object that differs, in file order: added, removed or changed."""
    a, b = old.model_dump(mode="json", by_alias=True), new.model_dump(mode="json", by_alias=True)
    changes: list[Change] = []
    for section in list(a):
        before, after = a.get(section), b.get(section)
        if section in KEYED_LISTS:
            kind, key = KEYED_LISTS[section]
            olds = {str(item[key]): item for item in before or []}
            news = {str(item[key]): item for item in after or []}
            names = list(olds) + [n for n in news if n not in olds]
            changes += filter(None, (_compare(kind, n, olds.get(n), news.get(n)) for n in names))
        elif section in KEYED_MAPS:
            kind = KEYED_MAPS[section]
            olds, news = before or {}, after or {}
            names = list(olds) + [n for n in news if n not in olds]
            changes += filter(None, (_compare(kind, n, olds.get(n), news.get(n)) for n in names))
        else:
            # Dotted from the section, e.g. settings:sip with field sip.listen.
            change = _compare("settings", section, {section: before}, {section: after})
            if change is not None:
                changes.append(change)
    return changes
