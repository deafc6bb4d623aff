"""Host entries to hosts: `fra1-app-[01:40]` is forty hosts with consecutive addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RANGE = re.compile(r"^(?P<prefix>[^\[\]]*)\[(?P<start>\d+):(?P<end>\d+)\](?P<suffix>[^\[\]]*)$")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_RANGE = 4096


class RangeError(ValueError):
    """The entry's name is not a host name nor a valid `name-[a:b]` range."""


@dataclass(frozen=True, slots=True)
class Expansion:
    names: tuple[str, ...]
    is_range: bool


def expand_names(pattern: str) -> Expansion:
    """Expand one `hosts:` key; zero padding of the start bound is kept (`[01:40]` gives 01..40)."""
    if "[" not in pattern and "]" not in pattern:
        _check_hostname(pattern)
        return Expansion((pattern,), False)
    m = _RANGE.match(pattern)
    if not m:
        raise RangeError(
            f"'{pattern}' is not a valid host range; write one range of numbers like 'web-[01:40]'"
        )
    start_s, end_s = m["start"], m["end"]
    start, end = int(start_s), int(end_s)
    if start > end:
        raise RangeError(f"range [{start_s}:{end_s}] is reversed; write [{end_s}:{start_s}]")
    if end - start + 1 > MAX_RANGE:
        raise RangeError(f"range [{start_s}:{end_s}] has {end - start + 1} hosts; at most {MAX_RANGE} per entry")
    width = len(start_s) if start_s.startswith("0") and len(start_s) > 1 else 1
    names = tuple(f"{m['prefix']}{i:0{width}d}{m['suffix']}" for i in range(start, end + 1))
    _check_hostname(names[0])
    _check_hostname(names[-1])
    return Expansion(names, True)


def _check_hostname(name: str) -> None:
    if not _HOSTNAME.match(name):
        hint = name.lower().replace("_", "-").replace(".", "-")
        fix = f" (e.g. '{hint}')" if _HOSTNAME.match(hint) else ""
        raise RangeError(
            f"'{name}' is not a valid host name: use lower-case letters, digits and '-', "
            f"at most 63 characters, not starting or ending with '-'{fix}"
        )
