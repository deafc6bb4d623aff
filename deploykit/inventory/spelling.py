"""One name, one spelling: provider, site and rack names compare ignoring case.

`Hetzner` and `hetzner` are one provider; counted as two, the resilience proof would claim the stack survives
the loss of a provider when it does not. Nothing is normalised silently: each use of a name spelt otherwise
than its first use is an error naming both spellings and where each is, and the user picks one.
"""

from __future__ import annotations

from collections.abc import Iterable

from deploykit.inventory.yamlsource import KeyPath, Source, render_path


def fold(name: str) -> str:
    """The form two names are compared in."""
    return name.casefold()


def other_spelling(src: Source, kind: str, name: str, path: KeyPath, first: str, first_path: KeyPath,
                   suggest: str | None = None) -> None:
    """Record that `name` (at `path`) is `first` (at `first_path`) spelt another way; suggest `first`."""
    src.error(path, f"{kind} '{name}' differs only in case from '{first}' ({render_path(first_path)}, line "
                    f"{src.line_of(first_path)}); {kind} names compare ignoring case, so these are one name spelt "
                    f"two ways: use one spelling, '{suggest or first}'")


def check_one_spelling(src: Source, kind: str, uses: Iterable[tuple[str, KeyPath]]) -> None:
    """Every use (name, where) whose name differs only in case from an earlier use is an error."""
    first: dict[str, tuple[str, KeyPath]] = {}
    for name, path in uses:
        seen = first.setdefault(fold(name), (name, path))
        if seen[0] != name:
            other_spelling(src, kind, name, path, *seen)
