"""Per-host configuration of the `lb` role: HAProxy in front of every tier, keepalived holding the site's VIP.

HAProxy's frontends and backends come from the placement of the host's site (its own app hosts first, other
sites' as `backup`); keepalived's VRRP instance from the site's lb members (priority, router id, the other
members as unicast peers).

Public traffic only on the public side: the HTTP frontend (HTTP and HTTPS, see tls.py for the certificate) on
every address, the VIP included. Everything else is on the WireGuard mesh (docs/network.md): every backend
server is addressed by its host's mesh address, the internal listens (PostgreSQL, Redis) and the stats
listener bind the load balancer's own mesh address (and 127.0.0.1), and keepalived's unicast VRRP goes
between the site's load balancers' mesh addresses, while the VIP itself stays on the public interface.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host, Inventory
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext, Frontend
from deploykit.services.lb.placement import SiteLbPlan, lb_sites
from deploykit.services.lb.tls import EdgeCertificate, cert_path, edge_certificate

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

# Requests under this path are never redirected to HTTPS: an ACME client's HTTP-01 challenge (RFC 8555 8.3).
ACME_CHALLENGE_PATH = "/.well-known/acme-challenge/"
# HTTP answers with this redirect to HTTPS: 308 (RFC 7538) keeps the method and the body, so a client's POST to
# http:// is repeated as a POST (a 301 lets clients turn it into a GET).
REDIRECT_CODE = 308


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
class HttpsSettings:
    port: int  # services.lb.https_port
    cert_file: str  # HAProxy's PEM (certificate, chain, key): /etc/haproxy/certs/<domain>.pem
    certificate: EdgeCertificate
    hsts: int  # Strict-Transport-Security max-age; 0: no header


@dataclass(frozen=True, slots=True)
class HttpFrontend:
    name: str  # "app": frontend and backend share it
    port: int  # plain HTTP: redirects to HTTPS (but ACME challenges)
    health_path: str
    servers: tuple[LbServer, ...]
    https: HttpsSettings


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
    # Where the adverts go: the mesh interface, between the members' mesh addresses (keepalived sends and
    # receives only on the instance's interface); a lone member has no peer and keeps the public interface.
    interface: str
    source: IPv4Address  # unicast_src_ip: the host's mesh address
    peers: tuple[IPv4Address, ...]  # the site's other lb members' mesh addresses, in the placement's order
    vip: IPv4Address
    vip_interface: str  # the public interface: the VIP, and its gratuitous ARPs, are there (`dev`)
    password: Secret  # keepalived-auth-<site>; vrrp_auth_pass() derives the 8 characters used


@dataclass(frozen=True, slots=True)
class LbHostConfig:
    host: str
    address: IPv4Address  # its mesh address: the stats listener's
    site: str
    check_interval_ms: int
    stats_port: int
    stats_user: str
    stats_password: Secret
    app: HttpFrontend | None  # None: the inventory has no app hosts
    listens: tuple[TcpListen, ...]
    # Internal (db, cache) frontends listen on these only, never on every address: PostgreSQL and Redis stay
    # on the mesh (and the host itself). The mesh address is bound even before the mesh is up (the mesh and lb
    # services set net.ipv4.ip_nonlocal_bind).
    internal_binds: tuple[IPv4Address, ...]
    vrrp: VrrpConfig


def lb_config(ctx: ConfigContext, host: Host, *, interface: str | None = None,
              mesh_interface: str | None = None) -> LbHostConfig:
    """`interface` / `mesh_interface`: other network interfaces than the inventory's (tests)."""
    site = _site_plan(ctx, host)
    me = next(m for m in site.members if m.name == host.name)
    assert site.vip is not None  # plan_placement only plans sites with a VIP
    inv = ctx.inv
    svc = inv.services
    http = [f for f in site.frontends if f.mode == "http"]
    if len(http) > 1:  # the template serves one HTTP frontend on the public port: never drop one silently
        raise ValueError(f"{host.name}: more than one service asks the load balancers for an HTTP frontend "
                         f"({', '.join(f.name for f in http)}); only one can be served on port {http[0].port}")
    app = _http(ctx, http[0]) if http else None
    listens = tuple(_tcp(ctx, f) for f in site.frontends if f.mode == "tcp")
    peers = tuple(inv.host(m.name).mesh_address for m in site.members if m.name != host.name)
    public = interface or host.interface
    return LbHostConfig(
        host=host.name,
        address=host.mesh_address,
        site=host.site,
        check_interval_ms=svc.lb.check_interval_ms,
        stats_port=svc.lb.stats_port,
        stats_user=STATS_USER,
        stats_password=ctx.secret(STATS_PASSWORD),
        app=app,
        listens=listens,
        internal_binds=(host.mesh_address, LOOPBACK),
        vrrp=VrrpConfig(
            instance=f"VI_{site.site}",
            router_id=site.router_id,
            priority=me.priority,
            interface=(mesh_interface or inv.mesh.interface) if peers else public,
            source=host.mesh_address,
            peers=peers,
            vip=site.vip,
            vip_interface=public,
            password=ctx.secret(vrrp_secret_name(site.site)),
        ),
    )


def _site_plan(ctx: ConfigContext, host: Host) -> SiteLbPlan:
    for site in lb_sites(ctx.placement):
        if site.site == host.site and any(m.name == host.name for m in site.members):
            return site
    raise ValueError(f"{host.name} is not an lb member of a site with a VIP")


def _servers(inv: Inventory, f: Frontend) -> tuple[LbServer, ...]:
    """Every backend at its host's mesh address (a backend that is no inventory host keeps its own)."""
    return tuple(LbServer(b.name, _mesh_address(inv, b.name, b.address), b.port, b.backup, b.check_port)
                 for b in f.backends)


def _mesh_address(inv: Inventory, name: str, address: IPv4Address) -> IPv4Address:
    try:
        return inv.host(name).mesh_address
    except KeyError:
        return address


def _http(ctx: ConfigContext, f: Frontend) -> HttpFrontend:
    svc = ctx.inv.services
    https = HttpsSettings(svc.lb.https_port, cert_path(ctx.inv.domain), edge_certificate(ctx), svc.lb.hsts)
    return HttpFrontend(f.name, f.port, svc.app.health, _servers(ctx.inv, f), https)


def _tcp(ctx: ConfigContext, f: Frontend) -> TcpListen:
    if f.check_kind not in CHECK_KINDS:
        raise ValueError(f"frontend {f.name!r}: no health check of kind {f.check_kind!r} (known: {CHECK_KINDS})")
    secret = ctx.secret(f.check_secret) if f.check_secret else None
    return TcpListen(f.name, f.port, f.check_kind, f.check_path, _servers(ctx.inv, f), secret)
