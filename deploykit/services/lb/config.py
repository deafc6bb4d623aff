"""Per-host configuration of the `lb` role: HAProxy in front of every tier, keepalived holding the site's VIP.

HAProxy's frontends and backends come from the placement of the host's site (its own app hosts first, other
sites' as `backup`); keepalived's VRRP instance from the site's lb members (priority, router id, the other
members as unicast peers).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext, Frontend
from deploykit.services.lb.placement import SiteLbPlan, lb_sites

STATS_PASSWORD = "haproxy-stats-password"
VRRP_PASSWORDS = "keepalived-auth-*"  # one per site, see vrrp_secret_name
STATS_USER = "admin"
LOOPBACK = IPv4Address("127.0.0.1")

# The network interface keepalived puts the VIP on comes from the inventory (`sites.<name>.interface`,
# default eth0, or a host's own `interface`); the lab's servers (systemd-nspawn containers) use `host0`.
LAB_INTERFACE = "host0"

# keepalived's PASS authentication takes at most 8 characters (longer values are silently truncated).
VRRP_AUTH_LENGTH = 8

# The health checks the template knows how to write (Frontend.check_kind).
CHECK_KINDS = ("http", "redis-master")


def vrrp_secret_name(site: str) -> str:
    return f"keepalived-auth-{site}"


def vrrp_auth_pass(secret: Secret) -> str:
    """The 8 characters keepalived's `auth_pass` takes, derived from the site's secret.

    The first 8 hex digits of its SHA-256: a fixed length and alphabet that keepalived's config parser takes
    verbatim (no quoting, no `#`/`!` comment characters), whatever the secret store generates. VRRP PASS
    authentication travels in clear text; it keeps another VRRP group on the segment (or a stray node with an
    old config) from joining the election, it is not protection against an attacker on the segment.
    """
    return hashlib.sha256(secret.reveal().encode()).hexdigest()[:VRRP_AUTH_LENGTH]


@dataclass(frozen=True, slots=True)
class LbServer:
    name: str  # the host's name: `set server <backend>/<name> state drain` addresses it by this
    address: IPv4Address
    port: int
    backup: bool  # only used when no non-backup server is up (other sites' app hosts)
    check_port: int | None  # health check on another port (Patroni's REST API); None: the server's port


@dataclass(frozen=True, slots=True)
class HttpFrontend:
    name: str  # "app": frontend and backend share it
    port: int
    health_path: str
    servers: tuple[LbServer, ...]


@dataclass(frozen=True, slots=True)
class TcpListen:
    name: str  # db-primary, db-replicas, cache
    port: int
    check: str  # "http" (GET check_path, on the server's check_port) or "redis-master" (AUTH, role:master)
    check_path: str | None
    servers: tuple[LbServer, ...]
    check_secret: Secret | None = None  # what the check authenticates with (redis-master)


@dataclass(frozen=True, slots=True)
class VrrpConfig:
    instance: str  # VI_<site>
    router_id: int
    priority: int
    interface: str
    source: IPv4Address  # unicast_src_ip
    peers: tuple[IPv4Address, ...]  # the site's other lb members, in the placement's order
    vip: IPv4Address
    password: Secret  # keepalived-auth-<site>; vrrp_auth_pass() derives the 8 characters used


@dataclass(frozen=True, slots=True)
class LbHostConfig:
    host: str
    address: IPv4Address
    site: str
    check_interval_ms: int
    stats_port: int
    stats_user: str
    stats_password: Secret
    app: HttpFrontend | None  # None: the inventory has no app hosts
    listens: tuple[TcpListen, ...]
    # Internal (db, cache) frontends listen on these only, never on every address: on a server with a public
    # interface, PostgreSQL and Redis stay private. The VIP is bound while another lb holds it (the base role
    # sets net.ipv4.ip_nonlocal_bind), so a takeover needs no HAProxy reload.
    internal_binds: tuple[IPv4Address, ...]
    vrrp: VrrpConfig


def lb_config(ctx: ConfigContext, host: Host, *, interface: str | None = None) -> LbHostConfig:
    site = _site_plan(ctx, host)
    me = next(m for m in site.members if m.name == host.name)
    assert site.vip is not None  # plan_placement only plans sites with a VIP
    svc = ctx.inv.services
    http = [f for f in site.frontends if f.mode == "http"]
    if len(http) > 1:  # the template serves one HTTP frontend on the public port: never drop one silently
        raise ValueError(f"{host.name}: more than one service asks the load balancers for an HTTP frontend "
                         f"({', '.join(f.name for f in http)}); only one can be served on port {http[0].port}")
    app = _http(http[0], svc.app.health) if http else None
    listens = tuple(_tcp(ctx, f) for f in site.frontends if f.mode == "tcp")
    return LbHostConfig(
        host=host.name,
        address=host.address,
        site=host.site,
        check_interval_ms=svc.lb.check_interval_ms,
        stats_port=svc.lb.stats_port,
        stats_user=STATS_USER,
        stats_password=ctx.secret(STATS_PASSWORD),
        app=app,
        listens=listens,
        internal_binds=(host.address, site.vip, LOOPBACK),
        vrrp=VrrpConfig(
            instance=f"VI_{site.site}",
            router_id=site.router_id,
            priority=me.priority,
            interface=interface or host.interface,
            source=host.address,
            peers=tuple(m.address for m in site.members if m.name != host.name),
            vip=site.vip,
            password=ctx.secret(vrrp_secret_name(site.site)),
        ),
    )


def _site_plan(ctx: ConfigContext, host: Host) -> SiteLbPlan:
    for site in lb_sites(ctx.placement):
        if site.site == host.site and any(m.name == host.name for m in site.members):
            return site
    raise ValueError(f"{host.name} is not an lb member of a site with a VIP")


def _servers(f: Frontend) -> tuple[LbServer, ...]:
    return tuple(LbServer(b.name, b.address, b.port, b.backup, b.check_port) for b in f.backends)


def _http(f: Frontend, health_path: str) -> HttpFrontend:
    return HttpFrontend(f.name, f.port, health_path, _servers(f))


def _tcp(ctx: ConfigContext, f: Frontend) -> TcpListen:
    if f.check_kind not in CHECK_KINDS:
        raise ValueError(f"frontend {f.name!r}: no health check of kind {f.check_kind!r} (known: {CHECK_KINDS})")
    secret = ctx.secret(f.check_secret) if f.check_secret else None
    return TcpListen(f.name, f.port, f.check_kind, f.check_path, _servers(f), secret)
