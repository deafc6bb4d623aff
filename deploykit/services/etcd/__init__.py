"""etcd: Patroni's leader lock (DCS). Debian's etcd-server 3.4."""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.services.contract import (
    DATA_TIER_COLUMNS,
    DATA_TIER_TITLE,
    ConfigContext,
    FirewallRule,
    HostFact,
    PlacementContext,
    Section,
    Service,
    TierContext,
    listed,
)
from deploykit.services.etcd.config import EtcdHostConfig, data_dir, etcd_config
from deploykit.services.etcd.membership import DATA_FACT, MEMBERS_FACT, READ_DATA, READ_MEMBERS, leave_script
from deploykit.services.etcd.placement import NAME, EtcdPlan, etcd_plan, plan_etcd
from deploykit.services.etcd.state import PACKAGES, desired
from deploykit.services.etcd.tier import judge_etcd
from deploykit.services.ports import mesh_addresses


class Etcd(Service):
    name = NAME
    # Whether a cluster runs and who has data: a joining host goes through the members API (membership.py).
    host_facts = (
        HostFact(MEMBERS_FACT, READ_MEMBERS, stored=False),
        HostFact(DATA_FACT, READ_DATA, stored=False),
    )
    tier_column = 50
    packages = PACKAGES
    retire_units = ("etcd",)

    def place(self, ctx: PlacementContext) -> EtcdPlan:
        return plan_etcd(ctx.inv)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_etcd(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        p = etcd_plan(placement)
        if not p.members:
            return ()
        row = ("etcd", listed([f"{m.name} ({m.provider})" for m in p.members]),
               f"{len(p.members)} members, quorum {p.quorum}")
        return (Section(DATA_TIER_TITLE, DATA_TIER_COLUMNS, (row,)),)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        inv = ctx.inv
        svc, mesh = inv.services.etcd, inv.mesh.interface
        return (
            # Patroni (and patronictl) on the db hosts is etcd's client; members reach each other as peers.
            FirewallRule("etcd client", "tcp", svc.client_port, mesh_addresses(inv, "etcd", "db"), mesh),
            FirewallRule("etcd peer", "tcp", svc.peer_port, mesh_addresses(inv, "etcd"), mesh),
        )

    def handover(self, ctx: ConfigContext, host: Host) -> str:
        p = etcd_plan(ctx.placement)
        return leave_script(host.name, f"http://127.0.0.1:{p.client_port}", data_dir(p))

    def config(self, ctx: ConfigContext, host: Host) -> EtcdHostConfig:
        return etcd_config(ctx, host)

    def desired(self, cfg: EtcdHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Etcd()
