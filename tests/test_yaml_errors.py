"""YAML syntax errors name the line pyyaml stopped at and, for a construct left
open (an unclosed `[`, `{` or quote), the line where it was opened."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioning import loader
from provisioning.loader import ConfigError, load_tree, parse_config

UNCLOSED_AT_THE_END = """\
sip:
  listen: 127.0.0.1:5080
access_numbers: [conf, conf-en
rooms:
  - name: demo
    participant_pin: "1111"
    moderator_pin: "9999"
"""


@pytest.fixture(params=["libyaml", "python"])
def parser(request, monkeypatch):
    """Both parsers the loader may use: libyaml's when PyYAML has it, else PyYAML's own."""
    if request.param == "python":
        monkeypatch.setattr(loader, "_LOADER", yaml.SafeLoader)
    elif not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML without libyaml")
    return request.param


def error(text: str, name: str = "ponte.yaml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, name)
    return info.value


def test_an_unclosed_bracket_names_the_line_it_was_opened_on(parser):
    e = error(UNCLOSED_AT_THE_END)
    # pyyaml notices only at the end of the file (or the next key)...
    assert e.file == "ponte.yaml" and e.line in (4, 7), str(e)
    # ...and the message also says where the '[' is.
    assert f"at line {e.line}; the '[' at line 3, column 17 is still open" in e.message, str(e)
    assert str(e).startswith(f"ponte.yaml:{e.line}: YAML syntax error: ")


def test_an_unclosed_bracket_at_the_very_end_of_the_file(parser):
    e = error("sip:\n  codecs: [PCMU/8000, PCMA/8000\n\n\n")
    assert "the '[' at line 2, column 11 is still open" in e.message, str(e)
    assert e.line is not None and e.line > 2


def test_an_unclosed_brace_and_quote(parser):
    e = error('rooms:\n  - {name: demo, participant_pin: "1111"\n  - other\n')
    assert "the '{' at line 2, column 5 is still open" in e.message, str(e)
    e = error('web:\n  language: "pt-BR\nsip:\n  listen: 127.0.0.1:5080\n')
    assert "the quote at line 2, column 13 is still open" in e.message, str(e)
    assert e.line == 5


def test_other_constructs_say_where_they_began(parser):
    e = error("sip:\n  listen: 127.0.0.1:5080\n bad: 1\n")
    assert e.line == 3
    assert "in a block mapping that began at line 1, column 1" in e.message, str(e)


def test_errors_without_a_distinct_start_are_as_before(parser):
    e = error("sip: listen: 127.0.0.1:5080\n")
    assert e.line == 1 and "line" not in e.message, str(e)
    assert e.message.startswith("YAML syntax error: mapping values are not allowed"), str(e)


def test_an_included_file_names_itself_and_both_lines(parser, tmp_path: Path):
    (tmp_path / "rooms.yaml").write_text('- {name: a, participant_pin: "1111"\n- {name: b}\n')
    main = tmp_path / "ponte.yaml"
    main.write_text("rooms: !include rooms.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_tree(main)
    e = info.value
    assert e.file == str(tmp_path / "rooms.yaml") and e.line == 2, str(e)
    assert "the '{' at line 1, column 3 is still open" in e.message, str(e)
