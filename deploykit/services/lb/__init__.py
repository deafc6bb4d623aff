"""lb: HAProxy in front of every tier and keepalived holding each site's VIP (Debian's haproxy, keepalived)."""

from __future__ import annotations

from deploykit.execute.steps import Step
from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.services.contract import (
    ConfigContext,
    FirewallRule,
    PlacementContext,
    Section,
    Service,
    Sysctl,
    TierContext,
)
from deploykit.services.lb.config import STATS_PASSWORD, VRRP_PASSWORDS, LbHostConfig, lb_config
from deploykit.services.lb.placement import NAME, SiteLbPlan, lb_sites, plan_lb
from deploykit.services.lb.report import describe_lb
from deploykit.services.lb.state import PACKAGES, desired
from deploykit.services.lb.tier import judge_lb
from deploykit.services.lb.traffic import drain, ready
from deploykit.services.ports import addresses


class Lb(Service):
    name = NAME
    tier_column = 10
    secrets = (STATS_PASSWORD, VRRP_PASSWORDS)
    packages = PACKAGES

    def place(self, ctx: PlacementContext) -> tuple[SiteLbPlan, ...]:
        return plan_lb(ctx)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_lb(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        return describe_lb(lb_sites(placement))

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        inv, svc = ctx.inv, ctx.inv.services.lb
        site = next((s for s in lb_sites(ctx.placement) if s.site == host.site), None)
        # The public entry is always open on a load balancer; internal frontends only to their clients.
        rules = [FirewallRule("HTTP", "tcp", svc.http_port, None)]
        for f in site.frontends if site else ():
            if f.port != svc.http_port:
                sources = None if f.clients is None else addresses(inv, *f.clients)
                rules.append(FirewallRule(f"HAProxy {f.label or f.name}", "tcp", f.port, sources))
        rules.append(FirewallRule("HAProxy stats", "tcp", svc.stats_port, addresses(inv, NAME)))
        peers = tuple(h.address for h in inv.with_role(NAME) if h.site == host.site and h.name != host.name)
        rules.append(FirewallRule("VRRP from the site's other load balancers", "vrrp", None, peers))
        return tuple(rules)

    def sysctls(self, host: Host) -> tuple[Sysctl, ...]:
        return (Sysctl("net.ipv4.ip_nonlocal_bind", "1", "HAProxy binds the site VIP on the backup too"),)

    def config(self, ctx: ConfigContext, host: Host) -> LbHostConfig:
        return lb_config(ctx, host)

    def desired(self, cfg: LbHostConfig) -> RoleState:
        return desired(cfg)

    def drain(self, placement: Placement, backend: str, servers: list[str],
              skip: frozenset[str]) -> dict[str, list[Step]]:
        return {lb: [drain(backend, servers)] for lb in _lb_hosts(placement, skip)}

    def undrain(self, placement: Placement, backend: str, servers: list[str],
                skip: frozenset[str]) -> dict[str, list[Step]]:
        return {lb: [ready(backend, servers)] for lb in _lb_hosts(placement, skip)}


def _lb_hosts(placement: Placement, skip: frozenset[str]) -> list[str]:
    return sorted(m.name for s in lb_sites(placement) for m in s.members if m.name not in skip)


SERVICE = Lb()
