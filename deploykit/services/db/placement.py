"""Which PostgreSQL members Patroni manages, and how many synchronous standbys confirm each commit."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Member, Placement, largest_share, members

NAME = "db"


@dataclass(frozen=True, slots=True)
class DbPlan:
    scope: str
    members: tuple[Member, ...]
    bootstrap: str | None  # the member that initialises the cluster (first by name); any may lead later
    synchronous: bool
    sync_standbys: int  # synchronous_node_count: standbys that confirm each commit
    sync_reason: str
    port: int
    patroni_port: int


def plan_db(inv: Inventory) -> DbPlan:
    found = members(inv.with_role(NAME))
    svc = inv.services.db
    hosts = {h.name: h for h in inv.hosts}
    levels = tuple(dict.fromkeys((*inv.failure_domains, "host")))
    share, where = largest_share(found, hosts, levels)
    if not svc.synchronous or len(found) < 2:
        count, reason = 0, "asynchronous replication" if len(found) > 1 else "a single member"
    else:
        # A commit is acknowledged once the primary and `count` standbys have it. If one failure-domain unit
        # can hold the primary and `share - 1` standbys, `count` must exceed that so a standby outside the
        # unit always has every acknowledged commit.
        count = min(max(1, share), len(found) - 1)
        reason = (f"{where} holds {share} of {len(found)} db members" if share > 1
                  else "no failure-domain unit holds two db members")
    return DbPlan(inv.name, found, found[0].name if found else None, svc.synchronous, count, reason,
                  svc.port, svc.patroni_port)


def db_plan(p: Placement) -> DbPlan:
    return p.part(NAME, DbPlan)
