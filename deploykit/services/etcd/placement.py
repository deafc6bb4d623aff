"""Who is in the etcd cluster (every host with the etcd role), its quorum, and where its members talk: their
mesh addresses (peers and clients, see docs/network.md)."""

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
    initial_cluster: str  # name=http://<mesh address>:peer_port,... for every member, by name
    endpoints: tuple[str, ...]  # <mesh address>:client_port of every member, by name (Patroni's etcd hosts)


def plan_etcd(inv: Inventory) -> EtcdPlan:
    hosts = inv.with_role(NAME)
    svc = inv.services.etcd
    return EtcdPlan(
        members=members(hosts),
        token=f"{inv.name}-etcd",
        quorum=len(hosts) // 2 + 1,
        client_port=svc.client_port,
        peer_port=svc.peer_port,
        initial_cluster=",".join(f"{h.name}=http://{h.mesh_address}:{svc.peer_port}" for h in hosts),
        endpoints=tuple(f"{h.mesh_address}:{svc.client_port}" for h in hosts),
    )


def etcd_plan(p: Placement) -> EtcdPlan:
    return p.part(NAME, EtcdPlan)
