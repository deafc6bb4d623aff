"""Who is in the etcd cluster (every host with the etcd role) and its quorum."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Member, Placement, members

NAME = "etcd"


@dataclass(frozen=True, slots=True)
class EtcdPlan:
    members: tuple[Member, ...]
    token: str
    quorum: int
    client_port: int
    peer_port: int

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{m.address}:{self.peer_port}" for m in self.members)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(f"{m.address}:{self.client_port}" for m in self.members)


def plan_etcd(inv: Inventory) -> EtcdPlan:
    found = members(inv.with_role(NAME))
    svc = inv.services.etcd
    return EtcdPlan(found, f"{inv.name}-etcd", len(found) // 2 + 1, svc.client_port, svc.peer_port)


def etcd_plan(p: Placement) -> EtcdPlan:
    return p.part(NAME, EtcdPlan)
