"""db: PostgreSQL 15 managed by Patroni (Debian's postgresql-15 and patroni), its leader lock in etcd."""

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
    Sysctl,
    TierContext,
    listed,
)
from deploykit.services.db.config import (
    LEADER_FACT,
    READ_LEADER,
    SECRETS,
    DbHostConfig,
    db_config,
)
from deploykit.services.db.membership import leave_script
from deploykit.services.db.placement import NAME, DbPlan, db_plan, plan_db
from deploykit.services.db.state import PACKAGES, desired
from deploykit.services.db.tier import judge_db
from deploykit.services.ports import mesh_addresses


class Db(Service):
    name = NAME
    tier_column = 40
    secrets = SECRETS
    packages = PACKAGES
    retire_units = ("patroni",)
    # Who leads now (a moment): the leader's changes go first (rollout_order).
    host_facts = (HostFact(LEADER_FACT, READ_LEADER, stored=False),)

    def place(self, ctx: PlacementContext) -> DbPlan:
        return plan_db(ctx.inv)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_db(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        p = db_plan(placement)
        if not p.members:
            return ()
        sync = (f"synchronous: {p.sync_standbys} standby(s) confirm each commit ({p.sync_reason})"
                if p.synchronous and p.sync_standbys else f"no synchronous standby ({p.sync_reason})")
        row = ("db (Patroni)", listed([f"{m.name} ({m.provider})" for m in p.members]),
               f"bootstraps on {p.bootstrap}; {sync}")
        return (Section(DATA_TIER_TITLE, DATA_TIER_COLUMNS, (row,)),)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        inv = ctx.inv
        svc, mesh = inv.services.db, inv.mesh.interface
        # Members replicate from each other, rewind from each other and ask each other's REST API; the load
        # balancers check the REST API (/primary, /replica). Clients never reach PostgreSQL's port: they connect
        # to the pooler on each member (services/pooler opens its port), which reaches PostgreSQL over the unix
        # socket; pgBackRest runs on the members themselves (over SSH) and uses the socket too.
        return (
            FirewallRule("PostgreSQL", "tcp", svc.port, mesh_addresses(inv, "db"), mesh),
            FirewallRule("Patroni REST API", "tcp", svc.patroni_port, mesh_addresses(inv, "db", "lb"), mesh),
        )

    def sysctls(self, host: Host) -> tuple[Sysctl, ...]:
        return (Sysctl("vm.swappiness", "1", "keep PostgreSQL's memory out of swap"),)

    def handover(self, ctx: ConfigContext, host: Host) -> str:
        p = db_plan(ctx.placement)
        return leave_script(host.name, f"{host.mesh_address}:{p.patroni_port}", ctx.inv.services.db.ttl)

    def config(self, ctx: ConfigContext, host: Host) -> DbHostConfig:
        return db_config(ctx, host)

    def desired(self, cfg: DbHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Db()
