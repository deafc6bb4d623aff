"""lb: HAProxy in front of every tier and keepalived holding each site's VIP (Debian's haproxy, keepalived).

HTTPS at the edge (HTTP redirected to it) with the user's certificate or one from deploykit's CA (tls.py);
everything internal on the WireGuard mesh (config.py).
"""

from __future__ import annotations

from deploykit.execute.steps import Step
from deploykit.inventory.model import Host, Inventory
from deploykit.inventory.names import natural_key
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
from deploykit.services.lb.tls import TLS_SECRETS, edge_expiry_warning
from deploykit.services.lb.traffic import drain, ready
from deploykit.services.ports import mesh_addresses


class Lb(Service):
    name = NAME
    tier_column = 10
    secrets = (STATS_PASSWORD, VRRP_PASSWORDS, TLS_SECRETS)
    packages = PACKAGES
    # keepalived first: its stop hands the VIP over at once (priority 0), before HAProxy stops serving.
    retire_units = ("keepalived", "haproxy")

    def place(self, ctx: PlacementContext) -> tuple[SiteLbPlan, ...]:
        return plan_lb(ctx)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_lb(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        return describe_lb(lb_sites(placement), inv.services.lb)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        inv, svc, mesh = ctx.inv, ctx.inv.services.lb, ctx.inv.mesh.interface
        site = next((s for s in lb_sites(ctx.placement) if s.site == host.site), None)
        # The public entry is always open on a load balancer, to anyone; everything else only on the mesh, to
        # the mesh addresses of those who use it.
        rules = [FirewallRule("HTTP", "tcp", svc.http_port, None),
                 FirewallRule("HTTPS", "tcp", svc.https_port, None)]
        for f in site.frontends if site else ():
            if f.mode != "http":
                sources = None if f.clients is None else mesh_addresses(inv, *f.clients)
                rules.append(FirewallRule(f"HAProxy {f.label or f.name}", "tcp", f.port, sources, mesh))
        rules.append(FirewallRule("HAProxy stats", "tcp", svc.stats_port, mesh_addresses(inv, NAME), mesh))
        peers = tuple(h.mesh_address for h in inv.with_role(NAME) if h.site == host.site and h.name != host.name)
        rules.append(FirewallRule("VRRP from the site's other load balancers", "vrrp", None, peers, mesh))
        return tuple(rules)

    def check(self, ctx: ConfigContext, host: Host) -> tuple[str, ...]:
        # The user's edge certificate close to its expiry (deploykit renews its own long before), once per site:
        # on the site's first load balancer.
        site = next((s for s in lb_sites(ctx.placement) if s.site == host.site), None)
        if site is None or not site.members or site.members[0].name != host.name:
            return ()
        warning = edge_expiry_warning(ctx)
        return (warning,) if warning else ()

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
    return sorted((m.name for s in lb_sites(placement) for m in s.members if m.name not in skip), key=natural_key)


SERVICE = Lb()
