"""Load the provisioning YAML and turn every failure into a ConfigError that
names the file, the line and the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from provisioning.schema import Config

EXAMPLE = Path(__file__).with_name("example.yaml")


@dataclass
class ConfigError(Exception):
    """A provisioning file that cannot be used, with where and why."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" [{self.key}]" if self.key else ""
        return f"{where}:{key} {self.message}"


def _node_for(root: yaml.Node | None, loc: tuple[Any, ...]) -> yaml.Node | None:
    """Walk the composed YAML tree along a pydantic error location."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    nxt = value
                    break
            if nxt is None:
                return node
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def _key_node_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line of the mapping key named by `loc` (for 'extra key' errors)."""
    parent = _node_for(root, loc[:-1])
    if isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(loc[-1]):
                return key.start_mark.line + 1
    return None


# libyaml's parser when PyYAML was built with it: ~10x faster on big trees.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_config(text: str, filename: str) -> Config:
    """Validate YAML text; raise ConfigError naming file, line and key."""
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(filename, line, "", f"YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(filename, None, "", f"YAML error: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(filename, 1, "", "the top level must be a mapping of keys")
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        # Only a bad file pays for the node tree that maps keys to lines.
        root = yaml.compose(text, Loader=_LOADER)
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        line = None
        if err["type"] == "extra_forbidden" and loc:
            line = _key_node_line(root, loc)
        if line is None:
            node = _node_for(root, loc)
            line = node.start_mark.line + 1 if node is not None else None
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more error{'s' if more > 1 else ''})"
        raise ConfigError(filename, line, key, message) from None


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a provisioning file (the bundled example by default)."""
    file = Path(path) if path else EXAMPLE
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(file), None, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), None, "", "not UTF-8 text") from None
    return parse_config(text, str(file))
