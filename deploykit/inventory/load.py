"""Read an inventory file: text checks, YAML, shape, whole-file rules, then the frozen model."""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import InventoryError, Problem
from deploykit.inventory.checks import build
from deploykit.inventory.model import Inventory
from deploykit.inventory.yamlsource import parse_yaml

MAX_BYTES = 16 * 1024 * 1024


def check_inventory(path: str | Path) -> tuple[Inventory | None, list[Problem]]:
    """The inventory (None if it has errors) and every problem found, errors and warnings."""
    shown = str(path)
    file = Path(path).expanduser()
    try:
        file = file.resolve()
        raw = file.read_bytes()
    except FileNotFoundError:
        return None, [Problem(shown, None, "", "no such file; check the path (example: inventories/example.yml)")]
    except IsADirectoryError:
        return None, [Problem(shown, None, "", "is a directory; give the inventory's YAML file")]
    except OSError as exc:
        return None, [Problem(shown, None, "", f"cannot be read: {exc.strerror}")]
    if len(raw) > MAX_BYTES:
        return None, [Problem(shown, None, "", f"is {len(raw)} bytes; an inventory is at most {MAX_BYTES} bytes")]
    if b"\x00" in raw:
        return None, [Problem(shown, None, "", "is a binary file, not YAML text; did you pass the wrong file?")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [Problem(shown, line, "", "is not UTF-8 text (binary file or wrong encoding); save it as UTF-8")]
    src = parse_yaml(text, shown)
    if src.data is None and src.problems:  # syntax error or empty file: nothing to check further
        return None, src.problems
    inv = build(src, file)
    problems = sorted(src.problems, key=lambda p: (p.line or 0))
    return inv, problems


def load_inventory(path: str | Path) -> Inventory:
    """The validated inventory; raises InventoryError listing every error if there is any."""
    inv, problems = check_inventory(path)
    if inv is None:
        errors = [p for p in problems if p.severity == "error"]
        raise InventoryError(errors or [Problem(str(path), None, "", "the inventory is not valid")])
    return inv
