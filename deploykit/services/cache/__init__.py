"""cache: Redis with Sentinel on every cache host (Debian's redis-server, redis-sentinel)."""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.services.cache.config import CACHE_PASSWORD, CacheHostConfig, cache_config
from deploykit.services.cache.placement import NAME, CachePlan, cache_plan, plan_cache
from deploykit.services.cache.sentinel import MASTER_FACT, READ_MASTER, failover_script
from deploykit.services.cache.state import PACKAGES, desired
from deploykit.services.cache.tier import judge_cache
from deploykit.services.contract import (
    DATA_TIER_COLUMNS,
    DATA_TIER_TITLE,
    Backend,
    ConfigContext,
    FirewallRule,
    Frontend,
    HostFact,
    PlacementContext,
    Rollout,
    Section,
    Service,
    Sysctl,
    TierContext,
    listed,
)
from deploykit.services.ports import mesh_addresses


class Cache(Service):
    name = NAME
    # Restarting every Redis at once would be an outage (and a failover): one host after the other.
    rollout = Rollout.ONE_AT_A_TIME
    tier_column = 60
    secrets = (CACHE_PASSWORD,)
    packages = PACKAGES
    # Who is master, as each host's sentinel sees it (a moment): changes are made against that master.
    host_facts = (HostFact(MASTER_FACT, READ_MASTER, stored=False),)
    retire_units = ("redis-sentinel", "redis-server")

    def place(self, ctx: PlacementContext) -> CachePlan:
        return plan_cache(ctx.inv)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_cache(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        p = cache_plan(placement)
        if not p.members:
            return ()
        row = ("cache (Redis)", listed([f"{m.name} ({m.provider})" for m in p.members]),
               f"master first on {p.master}; {len(p.sentinels)} sentinels, quorum {p.quorum}")
        return (Section(DATA_TIER_TITLE, DATA_TIER_COLUMNS, (row,)),)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        inv = ctx.inv
        svc, mesh = inv.services.cache, inv.mesh.interface
        # Replicas and sentinels (cache), the app through Sentinel (app, worker), HAProxy's checks (lb).
        clients = mesh_addresses(inv, "cache", "app", "worker", "lb")
        return (
            FirewallRule("Redis", "tcp", svc.port, clients, mesh),
            FirewallRule("Redis Sentinel", "tcp", svc.sentinel_port, clients, mesh),
        )

    def sysctls(self, host: Host) -> tuple[Sysctl, ...]:
        return (Sysctl("vm.overcommit_memory", "1", "Redis background saves fork without failing"),)

    def frontends(self, inv: Inventory, site: str) -> tuple[Frontend, ...]:
        caches = inv.with_role(NAME)
        if not caches:
            return ()
        backends = tuple(Backend(h.name, h.mesh_address, inv.services.cache.port, False) for h in caches)
        return (Frontend("cache", inv.services.lb.cache_port, "tcp", "redis role:master", backends,
                         check_kind="redis-master", check_secret=CACHE_PASSWORD, clients=("app", "worker"),
                         label="Redis"),)

    def handover(self, ctx: ConfigContext, host: Host) -> str:
        """A master leaving the role hands it to a replica first; the others' sentinels then forget it (their
        members changed: sentinel.py's reset)."""
        p = cache_plan(ctx.placement)
        return failover_script(p.port, p.sentinel_port, ctx.placement.name)

    def config(self, ctx: ConfigContext, host: Host) -> CacheHostConfig:
        return cache_config(ctx, host)

    def desired(self, cfg: CacheHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Cache()
