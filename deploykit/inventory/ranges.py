"""Host entries to hosts: `fra1-app-[01:40]` is forty hosts with consecutive addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

_RANGE = re.compile(r"^(?P<prefix>[^\[\]]*)\[(?P<start>\d+):(?P<end>\d+)\](?P<suffix>[^\[\]]*)$")
_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MAX_RANGE = 4096
_LAST = int(IPv4Address("255.255.255.255"))
_RANGE_RULE = "a range stays inside one /24 and uses neither its .0 nor its .255 address"


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


def check_range_addresses(pattern: str, first: IPv4Address, count: int) -> None:
    """The `count` consecutive addresses from `first` stay inside its /24 and use neither .0 nor .255.

    Run past .255, a range would silently take the broadcast address of its block and the network address of
    the next. A single host (not a range) may have such an address: in a network larger than a /24 they are
    ordinary ones. The caller has checked that the last address exists (is at most 255.255.255.255).
    """
    start = int(first)
    end = start + count - 1
    base = start & ~0xFF
    net = IPv4Network((base, 24))
    if start == base:
        reason = f"starts on {first}, the network address of {net}"
    elif end > base + 255:
        reason = f"runs out of {net} into {IPv4Network((base + 256, 24))}"
    elif end == base + 255:
        reason = f"ends on {IPv4Address(end)}, the broadcast address of {net}"
    else:
        return
    if count > 254:
        fix = "a /24 holds at most 254 hosts, so split it into entries of at most 254"
    elif start == base:
        fix = f"start it at {IPv4Address(base + 1)}"
    else:
        fix = f"start it at {IPv4Address(base + 255 - count)} or lower"
        if base + 257 <= _LAST:
            fix += f", or split it into two entries (the second starting at {IPv4Address(base + 257)})"
    size = "1 address" if count == 1 else f"{count} addresses"
    raise RangeError(f"range '{pattern}' takes {first} to {IPv4Address(end)} ({size}), which {reason}; "
                     f"{_RANGE_RULE}: {fix}")


def _check_hostname(name: str) -> None:
    if not _HOSTNAME.match(name):
        hint = name.lower().replace("_", "-").replace(".", "-")
        fix = f" (e.g. '{hint}')" if _HOSTNAME.match(hint) else ""
        raise RangeError(
            f"'{name}' is not a valid host name: use lower-case letters, digits and '-', "
            f"at most 63 characters, not starting or ending with '-'{fix}"
        )
