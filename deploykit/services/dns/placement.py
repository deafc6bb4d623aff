"""Who answers for the domain, and with what: the dns servers (NS records) and every site's entry address.

Every `dns` host is a primary for the inventory's `domain`, named `ns1`, `ns2` ... under it in host-name order
(the NS records and their glue). The public names (the apex, `www` and `services.dns.names`) answer with the
entry addresses of every site that serves the app: the site's VIP, held by its load balancers; a site with lb
hosts and no VIP (validation refuses that today) would be entered by each lb host's own address. Each
address counts only while the app answers through it: PowerDNS fetches the app's health path over HTTPS from
HAProxy's public frontend on that address, as a browser would reach it (plain HTTP only redirects there).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.services.contract import PlacementContext
from deploykit.services.lb.placement import NAME as LB
from deploykit.services.lb.placement import SiteLbPlan

NAME = "dns"
APEX, WWW = "@", "www"  # the zone's own name, and www under it


@dataclass(frozen=True, slots=True)
class NameServer:
    label: str  # ns1, ns2 ... (relative to the zone)
    fqdn: str  # ns1.chirp.example
    host: str
    address: IPv4Address
    site: str
    provider: str


@dataclass(frozen=True, slots=True)
class Entry:
    """A site's public entry address: answered while its health URL answers 200."""

    address: IPv4Address
    site: str
    provider: str
    hosts: tuple[str, ...]  # the lb hosts that can hold it: it is gone only when all of them are
    health_url: str  # what the check fetches, for people: https://<address>:<https port><health path>


@dataclass(frozen=True, slots=True)
class PublicName:
    label: str  # "@" (the apex), "www", or a label of services.dns.names
    fqdn: str


@dataclass(frozen=True, slots=True)
class DnsPlan:
    zone: str  # the inventory's domain
    servers: tuple[NameServer, ...]  # in host-name order: ns1 is the first
    names: tuple[PublicName, ...]
    entries: tuple[Entry, ...]  # in the order of `sites:`
    # The URL PowerDNS's ifurlup fetches for every entry: https:// and the domain's own name (the TLS server
    # name and the Host header a browser sends), connected to each entry address in turn instead of being
    # looked up.
    check_url: str
    check_port: int  # the load balancers' HTTPS port: the fallback check connects to it (see config.py)
    ttl: int
    check_interval: int
    check_timeout: int


def plan_dns(ctx: PlacementContext) -> DnsPlan | None:
    inv = ctx.inv
    hosts = inv.with_role(NAME)
    if not hosts:
        return None
    svc = inv.services
    servers = tuple(
        NameServer(f"ns{i}", f"ns{i}.{inv.domain}", h.name, h.address, h.site, h.provider)
        for i, h in enumerate(hosts, start=1)
    )
    labels = [APEX, WWW, *(n for n in dict.fromkeys(svc.dns.names) if n != WWW)]
    names = tuple(PublicName(label, inv.domain if label == APEX else f"{label}.{inv.domain}") for label in labels)
    return DnsPlan(
        zone=inv.domain,
        servers=servers,
        names=names,
        entries=site_entries(inv, ctx.parts.get(LB, ())),
        check_url=f"https://{inv.domain}:{svc.lb.https_port}{svc.app.health}",
        check_port=svc.lb.https_port,
        ttl=svc.dns.ttl,
        check_interval=svc.dns.check_interval,
        check_timeout=svc.dns.check_timeout,
    )


def site_entries(inv: Inventory, lb_sites: object) -> tuple[Entry, ...]:
    """Each site's entry, in the order of `sites:`: its VIP (from the lb placement, which plans every site
    with a VIP) if it has lb hosts; each lb host's own address if the site has no VIP."""
    assert isinstance(lb_sites, tuple)
    port, path = inv.services.lb.https_port, inv.services.app.health
    with_vip: dict[str, SiteLbPlan] = {s.site: s for s in lb_sites}
    out: list[Entry] = []
    for site in inv.sites.values():
        planned = with_vip.get(site.name)
        if planned is not None and planned.vip is not None:
            if planned.members:
                out.append(Entry(planned.vip, site.name, site.provider, tuple(m.name for m in planned.members),
                                 health_url(planned.vip, port, path)))
        else:
            out += [Entry(h.address, site.name, site.provider, (h.name,), health_url(h.address, port, path))
                    for h in inv.in_site(site.name) if h.has(LB)]
    return tuple(out)


def health_url(address: IPv4Address, port: int, path: str) -> str:
    return f"https://{address}:{port}{path}"


def dns_plan(p: Placement) -> DnsPlan | None:
    """The dns part of the placement; None when no host has the dns role."""
    part = p.parts.get(NAME)
    if part is None:
        return None
    assert isinstance(part, DnsPlan)
    return part
