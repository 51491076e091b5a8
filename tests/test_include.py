"""`!include`: one file per department, errors naming the included file."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.loader import ConfigError, load_tree

ROOM_A = '- {name: a, participant_pin: "1111", moderator_pin: "2222"}\n'
ROOM_B = '- {name: b, participant_pin: "3333", moderator_pin: "4444"}\n'


def tree(tmp_path: Path, main: str, **files: str) -> Path:
    for key, text in files.items():
        # keyword names stand for paths: rooms__sales_yaml -> rooms/sales.yaml
        file = tmp_path / key.replace("__", "/").removesuffix("_yaml")
        file = file.with_name(file.name + ".yaml")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
    (tmp_path / "ponte.yaml").write_text(main)
    return tmp_path / "ponte.yaml"


def test_one_file_per_department_is_merged(tmp_path):
    main = tree(
        tmp_path,
        "rooms: !include [rooms/sales.yaml, rooms/ops.yaml]\n"
        "profiles: {p: {limits: {local: 10}}}\n"
        "departments: !include departments.yaml\n"
        "lines: !include [lines/sales.yaml, lines/ops.yaml]\n",
        rooms__sales_yaml=ROOM_A,
        rooms__ops_yaml=ROOM_B,
        departments_yaml="sales: {profile: p}\nops: {profile: p}\n",
        lines__sales_yaml='"1001": {area_code: "11", department: sales}\n',
        lines__ops_yaml='"2001": {area_code: "21", department: ops}\n',
    )
    loaded = load_tree(main)
    assert [r.name for r in loaded.config.rooms] == ["a", "b"]
    assert loaded.config.lines["2001"].department == "ops"
    assert len(loaded.files) == 6
    assert loaded.sections["departments"].whole_file
    assert loaded.sections["rooms"].merged


@pytest.mark.parametrize(
    ("main", "files", "where", "message"),
    [
        (
            "rooms: !include r.yaml\n",
            {"r_yaml": ROOM_A + '- {name: b, participant_pin: "3333", moderator_pin: 4}\n'},
            "r.yaml:2",
            "[rooms.1.moderator_pin] moderator_pin must be quoted",
        ),
        (
            "rooms: !include [r.yaml, s.yaml]\n",
            {"r_yaml": ROOM_A, "s_yaml": ROOM_B.replace("}", ", bad: 1}")},
            "s.yaml:1",
            "[rooms.1.bad] unknown key",
        ),
        ("rooms: !include nope.yaml\n", {}, "ponte.yaml:1", "no such file"),
        (
            "rooms: !include r.yaml\n",
            {"r_yaml": "rooms: !include ponte.yaml\n"},
            "r.yaml:1",
            "a cycle",
        ),
        ("rooms: !include r.yaml\n", {"r_yaml": "- [unclosed\n"}, "r.yaml:2", "YAML syntax error"),
        ("rooms: !include\n", {}, "ponte.yaml:1", "needs a file name"),
        ("rooms: !include {a: b}\n", {}, "ponte.yaml:1", "a file name or a list"),
        (
            "dids: !include [a.yaml, b.yaml]\n",
            {
                "a_yaml": "'+551130000000': {ivr: entry}\n",
                "b_yaml": "'+551130000000': {ivr: entry}\n",
            },
            "ponte.yaml:1",
            "is in both",
        ),
        (
            "rooms: !include [r.yaml, d.yaml]\n",
            {"r_yaml": ROOM_A, "d_yaml": "x: 1\n"},
            "ponte.yaml:1",
            "all of them lists",
        ),
    ],
)
def test_bad_includes_name_the_file_and_line(tmp_path, main, files, where, message):
    path = tree(tmp_path, main, **files)
    with pytest.raises(ConfigError) as err:
        load_tree(path)
    text = str(err.value)
    assert text.startswith(str(tmp_path / where)), text
    assert message in text


def test_sections_point_at_the_text_restore_rewrites(tmp_path):
    main = tree(
        tmp_path,
        "# comentário\nrooms:\n  - {name: a, participant_pin: '1111', moderator_pin: '2222'}\n"
        "# next\nprofiles: {}\n",
    )
    loaded = load_tree(main)
    text = main.read_text()
    span = loaded.sections["rooms"]
    assert text[span.start : span.end].startswith("rooms:")
    assert text[span.start : span.end].rstrip().endswith("'2222'}")
    assert "# next" in text[span.end :]
