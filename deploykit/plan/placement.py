"""Placement: the topology every service configures, computed from the inventory alone.

Generic: each registered service places its own part (`Service.place`: who is in the etcd cluster, how many
synchronous standbys a commit waits for, each site's load balancers ...), in phase order, so a service can read
the parts placed before it. Templates only format what is decided here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, TypeVar

from deploykit.inventory.model import LEVELS, Host, Inventory

if TYPE_CHECKING:
    from deploykit.services.contract import Service

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    address: IPv4Address
    site: str
    provider: str


@dataclass(frozen=True, slots=True)
class HostGroup:
    """The hosts of a role, with their names as a set: judging a loss costs the size of the loss, not of the
    group (a `host` failure domain over thousands of app hosts stays linear)."""

    members: tuple[Member, ...]
    names: frozenset[str]

    def __len__(self) -> int:
        return len(self.members)

    def lost(self, gone: frozenset[str]) -> int:
        return len(self.names & gone)


def host_group(hosts: Iterable[Host]) -> HostGroup:
    found = members(hosts)
    return HostGroup(found, frozenset(m.name for m in found))


@dataclass(frozen=True, slots=True)
class Placement:
    name: str
    failure_domains: tuple[str, ...]
    parts: dict[str, object]  # service name -> its placement (only services that have one)

    def __getitem__(self, service: str) -> object:
        return self.parts[service]

    def part(self, service: str, kind: type[T]) -> T:
        """The part of `service`, checked to be a `kind` (services read their own and others' parts so)."""
        value = self.parts.get(service)
        if not isinstance(value, kind):
            raise LookupError(f"the placement has no {kind.__name__} for service {service!r}")
        return value


def member(h: Host) -> Member:
    return Member(h.name, h.address, h.site, h.provider)


def members(hosts: Iterable[Host]) -> tuple[Member, ...]:
    return tuple(member(h) for h in hosts)


def plan_placement(inv: Inventory, services: tuple[Service, ...] | None = None) -> Placement:
    from deploykit.services import SERVICES
    from deploykit.services.contract import PlacementContext

    chosen = SERVICES if services is None else services
    parts: dict[str, object] = {}
    ctx = PlacementContext(inv, parts, chosen)
    for service in chosen:
        part = service.place(ctx)
        if part is not None:
            parts[service.name] = part
    return Placement(inv.name, inv.failure_domains, parts)


def largest_share(members: tuple[Member, ...], hosts: dict[str, Host], levels: tuple[str, ...]) -> tuple[int, str]:
    """The most members any single failure-domain unit holds, and which unit that is."""
    best, where = 0, ""
    for level in levels:
        counts: dict[str, int] = {}
        for m in members:
            unit = hosts[m.name].unit(level)
            counts[unit] = counts.get(unit, 0) + 1
        for unit, n in sorted(counts.items()):
            if n > best:
                best, where = n, f"{level} {unit}"
    return best, where


def units(inv: Inventory, level: str) -> dict[str, tuple[Host, ...]]:
    """Each unit of `level` (in a stable order) and the hosts it holds."""
    assert level in LEVELS
    out: dict[str, list[Host]] = {}
    for h in inv.hosts:
        out.setdefault(h.unit(level), []).append(h)
    return {u: tuple(hs) for u, hs in sorted(out.items())}
