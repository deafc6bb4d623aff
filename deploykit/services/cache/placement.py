"""The Redis servers (every cache host; the first by name starts as master) and the sentinels' quorum."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Member, Placement, members

NAME = "cache"


@dataclass(frozen=True, slots=True)
class CachePlan:
    members: tuple[Member, ...]
    master: str | None  # the initial master; sentinels fail over to any replica
    sentinels: tuple[Member, ...]
    quorum: int  # sentinels that must agree the master is down
    port: int
    sentinel_port: int


def plan_cache(inv: Inventory) -> CachePlan:
    found = members(inv.with_role(NAME))
    svc = inv.services.cache
    return CachePlan(found, found[0].name if found else None, found, len(found) // 2 + 1,
                     svc.port, svc.sentinel_port)


def cache_plan(p: Placement) -> CachePlan:
    return p.part(NAME, CachePlan)
