"""The code's shape, checked (issue 17): modules in layers that never import
upward, no import cycle (counting imports under TYPE_CHECKING and inside
functions, which once hid one), and the seams that keep it so: one adapter
owns pjsua2, only the CLI builds the app server, web/ knows only its Backend.
See ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "pcm",
    "prompts",
    "store",
    "ivr",
    "bridge",
    "lines",
    "provisioning",
    "pbx",
    "web",
    "ponte",
)

# ponte's modules, bottom to top: each may import only from earlier rows.
PONTE_LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "ponte",
        "alertwebhook",
        "backup",
        "clock",
        "database",
        "install",
        "journal",
        "lockout_clock",
        "loop",
        "nodeconf",
        "records",
        "reports",
        "roomwatch",
        "sdnotify",
    ),
    ("legs", "extcalls", "known_callers", "guard_events", "homes", "control", "edge"),
    ("media", "stores"),
    ("recordings",),
    ("calllog", "rooms", "pinshare"),
    ("handoff",),
    ("entry",),
    ("routing",),
    ("dialout", "helpdesk"),
    ("scheduler",),
    ("services",),
    ("roomops", "scheduleops", "clusterview"),
    ("console",),
    ("status", "reload"),
    ("follow",),
    ("server", "nodes"),
    ("cli",),
)
PJSUA2_OWNERS = {
    "pbx.sipua",  # the adapter: SipUA
    "pbx.sipcalls",  # part of the adapter: its Call and Account subclasses
    "pbx.sipsetup",  # part of the adapter: Endpoint, account and codec config
    "pbx.softphone",  # the test phone
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module an import statement anywhere in the file names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


MODULES = _modules()
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _stdlib() -> set[str]:
    import sys

    return set(sys.stdlib_module_names)


def _project_deps(name: str) -> set[str]:
    return {m for m in GRAPH[name] if m in MODULES and m != name}


def test_no_import_cycle() -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for dep in sorted(_project_deps(name)):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(MODULES):
        visit(name, [])


def test_ponte_modules_import_only_lower_layers() -> None:
    rank = {
        f"ponte.{m}" if m != "ponte" else m: i for i, row in enumerate(PONTE_LAYERS) for m in row
    }
    unplaced = {m for m in MODULES if m.split(".")[0] == "ponte"} - set(rank)
    assert not unplaced, f"place these in PONTE_LAYERS: {sorted(unplaced)}"
    upward = [
        f"{name} -> {dep}"
        for name in rank
        for dep in _project_deps(name)
        if dep in rank and rank[dep] >= rank[name] and dep != "ponte"
    ]
    assert not upward, upward


def test_the_seams() -> None:
    for name, imports in GRAPH.items():
        top = {m.split(".")[0] for m in imports}
        if name not in PJSUA2_OWNERS:
            assert "pjsua2" not in top, (
                f"{name} imports pjsua2: only the adapter (pbx/sipua.py...) may"
            )
        if name != "ponte.cli":
            assert "ponte.server" not in imports, f"{name} builds the app server: only the CLI may"
        if name.startswith("web"):
            assert "ponte" not in top, f"{name}: web/ knows the app only as web.backend.Backend"
        if name.startswith("store"):
            # The storage layer knows tables and SQL, nothing of the app.
            assert top <= {"store", "sqlalchemy", "alembic", "sqlite3", "__future__"} | _stdlib(), (
                f"{name} imports {top}"
            )
        if name.split(".")[0] in ("ivr", "bridge", "lines", "pcm", "provisioning"):
            # The pure layers: state machines and data, no SIP stack, no app.
            above = top & {"ponte", "pbx", "web"}
            assert not above, f"{name} imports {above}"
