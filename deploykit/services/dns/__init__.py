"""dns: authoritative DNS for the inventory's domain from our own hosts (PowerDNS Authoritative 4.7, Debian's
pdns-server and pdns-backend-bind), answering the public names only with sites whose app answers.

No hosting provider or registrar-side DNS host stands between users and the sites: the registrar delegates
the domain to the dns hosts (NS records and glue, see docs/dns.md), every one of them a primary with the same
zone, and each answers the public names with PowerDNS LUA records (`ifurlup`) over every site's entry address,
checked through HAProxy as a browser would reach it. A lost provider's sites leave the answers within one
check round (config.py has the timing and PowerDNS 4.7's traps); the rule that proves it survives each loss is
tier.py, the one the apply stops on too.

Phase: last. Its health checks need the load balancers and the app serving (an answer computed before they
do would be the all-down fallback); nothing else depends on it.
"""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.services.contract import (
    ConfigContext,
    FirewallRule,
    PlacementContext,
    Rollout,
    Section,
    Service,
    TierContext,
)
from deploykit.services.dns.config import DNS_PORT, DnsHostConfig, dns_config
from deploykit.services.dns.placement import NAME, DnsPlan, dns_plan, plan_dns
from deploykit.services.dns.report import describe_dns
from deploykit.services.dns.state import PACKAGES, UNIT, desired
from deploykit.services.dns.tier import judge_dns


class Dns(Service):
    name = NAME
    # The edge of the edge: the first column of the resilience table, the first role of a host.
    tier_column = 5
    packages = PACKAGES
    retire_units = (UNIT,)
    # A restarted PowerDNS counts every address down until its first check round (4.7), and then answers
    # every site, dead ones included: one server at a time, each warmed up (state.py) before the next.
    rollout = Rollout.ONE_AT_A_TIME
    # No secrets: PowerDNS's API and webserver are off (pdns.conf.j2), nothing authenticates.

    def place(self, ctx: PlacementContext) -> DnsPlan | None:
        return plan_dns(ctx)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_dns(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        plan = dns_plan(placement)
        return describe_dns(inv, plan) if plan is not None else ()

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        # Authoritative DNS answers the whole internet's resolvers: UDP, and TCP for truncated answers.
        return (FirewallRule("DNS", "udp", DNS_PORT, None), FirewallRule("DNS over TCP", "tcp", DNS_PORT, None))

    def config(self, ctx: ConfigContext, host: Host) -> DnsHostConfig:
        return dns_config(ctx, host)

    def desired(self, cfg: DnsHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Dns()
