"""`ponte report ... --format xlsx --output FILE`: every report as an Excel
workbook with the same rows as its JSON, text kept as text (never a formula),
and bad arguments refused with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import yaml

from bridge.billing import BillingStore, LegRecord
from ponte import reports
from ponte.records import RecordStore
from provisioning.diff import Change
from tests.harness import ROOT

CALLER = '=HYPERLINK("http://evil.example","x")'  # a caller ID is anyone's text


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ponte.cli", *args, "--config", str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A provisioning file whose database holds a session, an audit and a restore."""
    db = tmp_path / "ponte.db"
    cfg = tmp_path / "ponte.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "database": str(db),
                "state_dir": str(tmp_path),
                "rooms": [{"name": "demo", "participant_pin": "1111", "moderator_pin": "9999"}],
            }
        )
    )
    t0 = time.time() - 600
    billing = BillingStore(str(db))
    sid = billing.open_session("demo", t0)
    billing.leg_joined("local", LegRecord(sid, 7, CALLER, "participant", None, t0, 0, ""))
    billing.leg_ended(LegRecord(sid, 7, CALLER, "participant", None, t0, t0 + 95, "caller"))
    billing.leg_joined("local", LegRecord(sid, 8, "1002", "moderator", None, t0, 0, ""))
    billing.leg_ended(LegRecord(sid, 8, "1002", "moderator", None, t0, t0 + 120, "room"))
    billing.close_session(sid, t0 + 120)
    store = RecordStore(str(db))
    store.audit([Change("room", "demo", "lock", {"locked": (False, True)})], "ana", "command")
    store.restore_done("/tmp/a.tar.gz", ["rooms"], "success", "ana", {"rejected": []})
    return cfg


REPORTS: list[tuple[str, ...]] = [
    ("conferences",),
    ("participants", "1"),
    ("usage",),
    ("calls",),
    ("alerts",),
    ("audit",),
    ("restores",),
]


@pytest.mark.parametrize("what", REPORTS, ids=lambda w: w[0])
def test_every_report_as_xlsx_has_the_json_reports_rows(records: Path, tmp_path, what) -> None:
    as_json = _cli(records, "report", *what, "--json")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    out = tmp_path / f"{what[0]}.xlsx"
    made = _cli(records, "report", *what, "--format", "xlsx", "--output", str(out))
    assert made.returncode == 0, made.stderr
    sheet = openpyxl.load_workbook(out).active
    assert sheet is not None and sheet.title == what[0]
    header, *cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    if rows:
        assert header == list(rows[0])
    assert [dict(zip(header, r, strict=True)) for r in cells] == rows
    if what[0] == "participants":
        assert CALLER in {r["caller"] for r in rows}


def test_text_stays_text_and_control_characters_go(tmp_path) -> None:
    out = tmp_path / "t.xlsx"
    rows: list[dict[str, Any]] = [
        {"a": CALLER, "b": 3, "c": None},
        {"a": "bell\x07here", "b": 2.5, "c": {"k": 1}},
    ]
    assert reports.write_xlsx(rows, ("a", "b", "c"), out) == 2
    sheet = openpyxl.load_workbook(out).active
    assert sheet is not None
    assert sheet["A2"].value == CALLER and sheet["A2"].data_type == "s", "not a formula"
    assert [c.value for c in sheet[3]] == ["bellhere", 2.5, '{"k": 1}']


def test_bad_output_arguments_are_refused_and_write_nothing(records: Path, tmp_path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    no_file = _cli(records, "report", "audit", "--format", "xlsx")
    assert no_file.returncode == 2 and "--output" in no_file.stderr
    no_dir = _cli(
        records, "report", "audit", "--format", "xlsx", "--output", str(tmp_path / "no/x.xlsx")
    )
    assert no_dir.returncode == 2 and "no folder" in no_dir.stderr
    both = _cli(records, "report", "audit", "--json", "--format", "xlsx", "--output", "x")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # CSV and JSON go to --output too.
    out = tmp_path / "audit.csv"
    assert _cli(records, "report", "audit", "--csv", "--output", str(out)).returncode == 0
    assert out.read_text().startswith("at,by,unix_user")
