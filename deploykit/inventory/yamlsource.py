"""YAML text to plain Python data, remembering the line of every key and catching duplicate keys.

PyYAML silently keeps the last of two equal keys in a mapping; an inventory must not, so mappings are
built here from the composed node tree. Anchors, aliases and merge keys (`<<: *defaults`) work as in any
YAML file; a key that a merge brings in may be overridden by an explicit one without complaint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from deploykit.errors import Problem

KeyPath = tuple[Any, ...]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


@dataclass
class Source:
    file: str
    data: Any = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    built: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    count: int = 0

    def line_of(self, path: KeyPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        while True:
            line = self.lines.get(path)
            if line is not None or not path:
                return line
            path = path[:-1]

    def error(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.line_of(path), render_path(path), message))

    def warn(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(self.file, self.line_of(path), render_path(path), message, "warning"))


def render_path(path: KeyPath) -> str:
    return "/".join(str(p) for p in path)


def parse_yaml(text: str, file: str) -> Source:
    """Parse one YAML document; syntax errors and duplicate keys become problems, never exceptions."""
    src = Source(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            src.problems.append(Problem(file, None, "", "the inventory is empty; start from inventories/example.yml"))
            return src
        src.lines[()] = node.start_mark.line + 1
        src.data = _build(loader, node, (), src)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or "invalid YAML"
        if exc.context and "expected a single document" in exc.context:
            what = "holds more than one YAML document (a second '---'); an inventory is one document"
        src.problems.append(Problem(file, line, "", f"YAML syntax error: {what}"))
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; no mark, only a position
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        src.problems.append(Problem(file, line, "", f"character #x{char:04x} is not allowed in YAML; remove it"))
    except yaml.YAMLError as exc:
        src.problems.append(Problem(file, None, "", f"YAML error: {' '.join(str(exc).split())}"))
    except _TooLarge:
        src.problems.append(Problem(file, None, "", f"aliases expand to more than {MAX_NODES} values; "
                                    "an inventory does not need that many (recursive or nested aliases?)"))
    except RecursionError:
        src.problems.append(Problem(file, None, "", "YAML nesting is too deep (recursive alias?)"))
    finally:
        loader.dispose()
    return src


MAX_NODES = 200_000


class _TooLarge(Exception):
    pass


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, src: Source) -> Any:
    """Build each node once: an alias shares the anchor's value (no exponential re-expansion)."""
    built = src.built.get(id(node))
    if built is not None:
        return built[1]
    src.count += 1
    if src.count > MAX_NODES:
        raise _TooLarge
    if isinstance(node, yaml.MappingNode):
        value: Any = _build_mapping(loader, node, path, src)
    elif isinstance(node, yaml.SequenceNode):
        value = []
        for i, child in enumerate(node.value):
            src.lines[path + (i,)] = child.start_mark.line + 1
            value.append(_build(loader, child, path + (i,), src))
    else:
        value = loader.construct_object(node, deep=True)
    src.built[id(node)] = (node, value)  # keeps the node alive so its id stays unique
    return value


def _build_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, path: KeyPath, src: Source) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
        if key is None:
            continue
        line = key_node.start_mark.line + 1
        if key in seen:
            src.problems.append(Problem(
                src.file, line, render_path(path + (key,)),
                f"duplicate key '{key}' (first at line {seen[key]}); YAML would silently keep only the last one: "
                "remove or rename one of them",
            ))
        else:
            seen[key] = line
    loader.flatten_mapping(node)  # resolves `<<` merges; explicit keys come last and win
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            src.problems.append(Problem(src.file, key_node.start_mark.line + 1, render_path(path),
                                        "a key must be plain text, not a list or mapping"))
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            src.problems.append(Problem(
                src.file, key_node.start_mark.line + 1, render_path(path + (key,)),
                f"key {key!r} must be text; quote it (\"{key}\")"))
            key = str(key)
        child = path + (key,)
        src.lines[child] = key_node.start_mark.line + 1  # an explicit key after a merge wins, with its line
        out[key] = _build(loader, value_node, child, src)
    return out
