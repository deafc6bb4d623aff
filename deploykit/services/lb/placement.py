"""Each site's load balancers: VRRP priorities and router id for the site's VIP, and the frontends every
service asks them to serve (`Service.frontends`), HTTP ones first."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.services.contract import Frontend, PlacementContext

NAME = "lb"
VRRP_TOP_PRIORITY = 150
VRRP_STEP = 10
VRRP_FIRST_ROUTER_ID = 51


@dataclass(frozen=True, slots=True)
class LbMember:
    name: str
    address: IPv4Address
    priority: int


@dataclass(frozen=True, slots=True)
class SiteLbPlan:
    site: str
    provider: str
    vip: IPv4Address | None
    router_id: int
    members: tuple[LbMember, ...]  # highest priority first
    frontends: tuple[Frontend, ...]


def plan_lb(ctx: PlacementContext) -> tuple[SiteLbPlan, ...]:
    """Every site with a VIP (in file order), whether or not it has lb hosts yet."""
    inv = ctx.inv
    return tuple(plan_site_lb(ctx, site, i) for i, site in enumerate(inv.sites) if inv.sites[site].vip)


def plan_site_lb(ctx: PlacementContext, site: str, index: int) -> SiteLbPlan:
    inv = ctx.inv
    lbs = [h for h in inv.with_role(NAME) if h.site == site]
    members = tuple(
        LbMember(h.name, h.address, max(VRRP_TOP_PRIORITY - VRRP_STEP * i, 1)) for i, h in enumerate(lbs)
    )
    return SiteLbPlan(site, inv.sites[site].provider, inv.sites[site].vip, VRRP_FIRST_ROUTER_ID + index,
                      members, plan_frontends(ctx, inv, site))


def plan_frontends(ctx: PlacementContext, inv: Inventory, site: str) -> tuple[Frontend, ...]:
    asked = [f for s in ctx.services for f in s.frontends(inv, site)]
    return tuple(sorted(asked, key=lambda f: f.mode != "http"))  # stable: HTTP first, then in phase order


def lb_sites(p: Placement) -> tuple[SiteLbPlan, ...]:
    sites = p.parts.get(NAME, ())
    assert isinstance(sites, tuple)
    return sites
