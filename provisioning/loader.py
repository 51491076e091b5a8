"""Load the provisioning YAML and turn every failure into a ConfigError that
names the file, the line and the key.

A value may be `!include PATH` (or `!include [PATH, ...]`, merged), relative
to the including file, so an admin can keep one file per department.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ivr.keys import duplicate_keys
from provisioning.schema import Config

EXAMPLE = Path(__file__).with_name("example.yaml")
INCLUDE_TAG = "!include"
MAX_INCLUDE_DEPTH = 8


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


@dataclass
class Section:
    """Where a top-level key lives: the file and the text span of `key: value`.

    `whole_file` means the value is an included file of its own (restore then
    rewrites that file); `merged` means it came from several files.
    """

    file: str
    start: int
    end: int
    whole_file: bool = False
    merged: bool = False


@dataclass
class Loaded:
    """A validated configuration with the files it was read from."""

    config: Config
    data: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    sections: dict[str, Section] = field(default_factory=dict)


def _node_for(
    root: yaml.Node | None, loc: tuple[Any, ...], origin: dict[Any, str] | None = None
) -> yaml.Node | None:
    """Walk the composed YAML tree along a pydantic error location, as far as
    it goes. With `origin`, its "file" entry is set to the node's file."""
    node = root
    seen = origin or {}
    file = seen.get(id(node))
    for part in loc:
        nxt = None
        if isinstance(node, yaml.MappingNode):
            nxt = next(
                (
                    v
                    for k, v in node.value
                    if isinstance(k, yaml.ScalarNode) and k.value == str(part)
                ),
                None,
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            nxt = node.value[part] if part < len(node.value) else None
        if nxt is None:
            break
        node = nxt
        file = seen.get(id(node), file)
    if origin is not None and file is not None:
        origin["file"] = file
    return node


def _key_node(
    root: yaml.Node | None, loc: tuple[Any, ...], origin: dict[Any, str]
) -> yaml.Node | None:
    """The mapping key named by `loc` (for 'extra key' errors)."""
    parent = _node_for(root, loc[:-1], origin)
    if isinstance(parent, yaml.MappingNode):
        for key, _ in parent.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(loc[-1]):
                return key
    return None


# libyaml's parser when PyYAML was built with it: ~10x faster on big trees.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ANONYMOUS = ("<file>", "<unicode string>", "<string>", "<byte string>")


# What an unfinished construct pyyaml names as its context was opened with.
_OPENERS = {
    "while parsing a flow sequence": "'['",
    "while parsing a flow mapping": "'{'",
    "while scanning a quoted scalar": "quote",
}


def _marked(exc: yaml.MarkedYAMLError, fallback: str, what: str) -> ConfigError:
    """A YAML error at the line where pyyaml noticed it. When pyyaml also knows
    where the construct it was reading began (an unclosed `[` is noticed only at
    the next key, or at the end of the file), that line is said too."""
    mark = exc.problem_mark or exc.context_mark
    name = mark.name if mark and mark.name not in _ANONYMOUS else fallback
    message = f"{what}: {exc.problem}"
    start = exc.context_mark
    if mark is not None and start is not None and start.index < mark.index:
        where = f"line {start.line + 1}, column {start.column + 1}"
        opener = _OPENERS.get(exc.context or "")
        if opener is not None:
            message += f" at line {mark.line + 1}; the {opener} at {where} is still open"
        elif start.line != mark.line:
            # "while parsing a block mapping" -> "a block mapping"
            construct = re.sub(r"^while \w+ ", "", exc.context or "") or "what"
            message += f" at line {mark.line + 1}, in {construct} that began at {where}"
    return ConfigError(name, mark.line + 1 if mark else None, "", message)


class _Tree:
    """Composes a file and its includes into one node tree."""

    def __init__(self, overlay: dict[Path, str] | None) -> None:
        self.overlay = overlay or {}
        self.files: list[Path] = []
        self.texts: dict[str, str] = {}
        self.merged: set[int] = set()
        # Which file each included tree (and each item of a merged one) came
        # from: libyaml's marks only carry a name when it reads through a
        # Python file object, which doubles the parse time of a big tree.
        self.origin: dict[int, str] = {}

    def compose(self, path: Path, stack: tuple[Path, ...] = ()) -> yaml.Node | None:
        if path in self.overlay:
            text = self.overlay[path]
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(str(path), None, "", f"cannot read: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(str(path), None, "", "not UTF-8 text") from None
        self.files.append(path)
        self.texts[str(path)] = text
        try:
            node = yaml.compose(text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            raise _marked(exc, str(path), "YAML syntax error") from None
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), None, "", f"YAML error: {exc}") from None
        if node is None:
            return None
        self.origin[id(node)] = str(path)
        if INCLUDE_TAG not in text:
            return node  # nothing to resolve: skip walking a big tree
        return self._resolve(node, path, (*stack, path))

    def _resolve(self, node: yaml.Node, path: Path, stack: tuple[Path, ...]) -> yaml.Node:
        if node.tag == INCLUDE_TAG:
            return self._include(node, path, stack)
        if isinstance(node, yaml.MappingNode):
            node.value = [(k, self._resolve(v, path, stack)) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            node.value = [self._resolve(v, path, stack) for v in node.value]
        return node

    def _include(self, node: yaml.Node, path: Path, stack: tuple[Path, ...]) -> yaml.Node:
        line = node.start_mark.line + 1

        def fail(message: str) -> ConfigError:
            return ConfigError(str(path), line, "", message)

        if isinstance(node, yaml.ScalarNode):
            names = [node.value]
        elif isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.ScalarNode) for n in node.value
        ):
            names = [n.value for n in node.value]
        else:
            raise fail("!include takes a file name or a list of file names")
        if not names or not all(names):
            raise fail("!include needs a file name")
        if len(stack) > MAX_INCLUDE_DEPTH:
            raise fail(f"!include nests deeper than {MAX_INCLUDE_DEPTH} files")
        parts: list[yaml.Node] = []
        for name in names:
            target = path.parent / name
            if target in stack:
                raise fail(f"!include {name} includes itself again (a cycle)")
            if target not in self.overlay and not target.is_file():
                raise fail(f"!include {name}: no such file ({target})")
            sub = self.compose(target, stack)
            if sub is None:
                raise fail(f"!include {name}: the file is empty")
            parts.append(sub)
        if len(parts) == 1:
            return parts[0]
        return self._merge(parts, fail)

    def _merge(self, parts: list[yaml.Node], fail: Any) -> yaml.Node:
        first = parts[0]
        for p in parts:
            for item in p.value:
                self.origin[id(item)] = self.origin[id(p)]
        if all(isinstance(p, yaml.SequenceNode) for p in parts):
            merged: yaml.Node = yaml.SequenceNode(
                first.tag, [v for p in parts for v in p.value], first.start_mark, first.end_mark
            )
        elif all(isinstance(p, yaml.MappingNode) for p in parts):
            seen: dict[str, str] = {}
            for p in parts:
                for k, _ in p.value:
                    if k.value in seen:
                        raise fail(
                            f"key {k.value!r} is in both {seen[k.value]} and {self.origin[id(p)]}"
                        )
                    seen[k.value] = self.origin[id(p)]
            merged = yaml.MappingNode(
                first.tag, [kv for p in parts for kv in p.value], first.start_mark, first.end_mark
            )
        else:
            raise fail("!include of several files needs all of them lists, or all mappings")
        self.merged.add(id(merged))
        return merged

    def sections(self, root: yaml.MappingNode, main: str) -> dict[str, Section]:
        """Where each top-level key's text lives (restore rewrites it there)."""
        out: dict[str, Section] = {}
        for key, value in root.value:
            name = self.origin.get(id(value), main)
            if id(value) in self.merged:
                out[key.value] = Section(main, key.start_mark.index, 0, merged=True)
            elif name != main:
                out[key.value] = Section(name, 0, len(self.texts[name]), whole_file=True)
            else:
                out[key.value] = Section(
                    main, key.start_mark.index, _content_end(self.texts[main], value)
                )
        return out


def _content_end(text: str, value: yaml.Node) -> int:
    """End of a value's own text: a block ends where the next key starts, so
    give the trailing blank and comment lines back to what follows."""
    end = value.end_mark.index
    if not isinstance(value, yaml.ScalarNode):
        head = text[:end]
        lines = head.splitlines(keepends=True)
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
            end -= len(lines.pop())
        if lines and lines[-1].endswith("\n"):
            end -= 1
    return end


def _validation_error(exc: ValidationError, root: yaml.Node, tree: _Tree, main: str) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    origin: dict[Any, str] = dict(tree.origin)
    node = _key_node(root, loc, origin) if err["type"] == "extra_forbidden" and loc else None
    if node is None:
        node = _node_for(root, loc, origin)
    line = node.start_mark.line + 1 if node is not None else None
    file = origin.get("file") or main
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key"
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return ConfigError(file, line, key, message)


def _check_key_map(root: yaml.MappingNode, tree: _Tree, main: str) -> None:
    """Refuse `keys.map` binding one key twice. YAML keeps only the last of
    two equal keys, so once constructed the first binding would be silently
    lost: the check reads the keys as written."""
    keys = next((v for k, v in root.value if getattr(k, "value", None) == "keys"), None)
    if not isinstance(keys, yaml.MappingNode):
        return
    node = next((v for k, v in keys.value if getattr(k, "value", None) == "map"), None)
    if not isinstance(node, yaml.MappingNode):
        return
    written = [k for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
    for key in duplicate_keys(k.value for k in written):
        lines = [k.start_mark.line + 1 for k in written if k.value == key]
        file = tree.origin.get(id(node)) or tree.origin.get(id(keys)) or main
        raise ConfigError(
            file,
            lines[-1],
            "keys.map",
            f"key {key} is bound twice (lines {', '.join(map(str, lines))}): "
            "one key does one thing",
        )


def load_tree(path: str | Path | None = None, overlay: dict[Path, str] | None = None) -> Loaded:
    """Read, include and validate a provisioning file.

    `overlay` maps paths to text used instead of the files on disk, so a
    restore can validate what it is about to write before writing it.
    """
    file = Path(path) if path else EXAMPLE
    tree = _Tree(overlay)
    root = tree.compose(file)
    main = str(file)
    if root is None:
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(main, 1, "", "the top level must be a mapping of keys")
    _check_key_map(root, tree, main)
    try:
        data = _LOADER("").construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise _marked(exc, main, "YAML error") from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, root, tree, main) from None
    return Loaded(config, data, tree.files, tree.sections(root, main))


def parse_config(text: str, filename: str) -> Config:
    """Validate YAML text; raise ConfigError naming file, line and key."""
    return load_tree(filename, {Path(filename): text}).config


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a provisioning file (the bundled example by default)."""
    return load_tree(path).config
