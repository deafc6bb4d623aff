"""Read an inventory file: text checks, YAML, shape, whole-file rules, then the frozen model."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deploykit.errors import InventoryError, Problem
from deploykit.inventory.checks import build
from deploykit.inventory.model import Inventory
from deploykit.inventory.yamlsource import parse_yaml

MAX_BYTES = 16 * 1024 * 1024


def check_inventory(path: str | Path, roles: tuple[str, ...] | None = None) -> tuple[Inventory | None, list[Problem]]:
    """The inventory (None if it has errors) and every problem found, errors and warnings.

    `roles`: the role names a host may have, in their canonical order (a host's roles are stored in it);
    default: the roles of the registered services (`deploykit.services.inventory_roles`).
    """
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
    with _collector_paused():
        src = parse_yaml(text, shown)
        if src.data is None and src.problems:  # syntax error or empty file: nothing to check further
            return None, src.problems
        inv = build(src, file, _registered_roles() if roles is None else tuple(roles))
        problems = sorted(src.problems, key=lambda p: (p.line or 0))
        del src  # the YAML tree goes now, by reference counting: the collector, once back, need not walk it
    return inv, problems


def load_inventory(path: str | Path, roles: tuple[str, ...] | None = None) -> Inventory:
    """The validated inventory; raises InventoryError listing every error if there is any (`roles`: as above)."""
    inv, problems = check_inventory(path, roles)
    if inv is None:
        errors = [p for p in problems if p.severity == "error"]
        raise InventoryError(errors or [Problem(str(path), None, "", "the inventory is not valid")])
    return inv


def _registered_roles() -> tuple[str, ...]:
    # Imported here, not at the top: the services build on this package's model (data flows one way), and
    # only the role names come back, so adding a service needs no edit here.
    from deploykit.services import inventory_roles

    return inventory_roles()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection while the model is built.

    Building allocates a few objects per key and frees next to none, so the collector's full collections
    (each walks every live object) come again and again as the heap grows: at 5,000 hosts they were half of
    the time and grew faster than the inventory. Parsing and checking make no reference cycles worth
    collecting early; the collector resumes (if it was on) as soon as the model is built.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
