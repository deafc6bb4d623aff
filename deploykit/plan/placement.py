"""Placement: the topology every role configures, computed from the inventory alone.

Who is in the etcd cluster, which PostgreSQL members Patroni manages and how many synchronous standbys a
commit waits for, the Redis master candidate and the sentinels' quorum, each site's load balancers with
their VRRP priorities and router ids, and the backends of every HAProxy frontend. Templates only format
what is decided here.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import LEVELS, Host, Inventory

VRRP_TOP_PRIORITY = 150
VRRP_STEP = 10
VRRP_FIRST_ROUTER_ID = 51


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    address: IPv4Address
    site: str
    provider: str


@dataclass(frozen=True, slots=True)
class EtcdPlan:
    members: tuple[Member, ...]
    token: str
    quorum: int
    client_port: int
    peer_port: int

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{m.address}:{self.peer_port}" for m in self.members)

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(f"{m.address}:{self.client_port}" for m in self.members)


@dataclass(frozen=True, slots=True)
class DbPlan:
    scope: str
    members: tuple[Member, ...]
    bootstrap: str | None  # the member that initialises the cluster (first by name); any may lead later
    synchronous: bool
    sync_standbys: int  # synchronous_node_count: standbys that confirm each commit
    sync_reason: str
    port: int
    patroni_port: int


@dataclass(frozen=True, slots=True)
class CachePlan:
    members: tuple[Member, ...]
    master: str | None  # the initial master; sentinels fail over to any replica
    sentinels: tuple[Member, ...]
    quorum: int  # sentinels that must agree the master is down
    port: int
    sentinel_port: int


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    address: IPv4Address
    port: int
    backup: bool  # only used when no non-backup server is healthy (other sites' app hosts)
    check_port: int | None = None


@dataclass(frozen=True, slots=True)
class Frontend:
    name: str  # app, db-primary, db-replicas, cache
    port: int
    mode: str  # http | tcp
    check: str  # what the health check asks: "GET /healthz", "GET /primary on :8008", ...
    backends: tuple[Backend, ...]


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


@dataclass(frozen=True, slots=True)
class Placement:
    name: str
    failure_domains: tuple[str, ...]
    etcd: EtcdPlan
    db: DbPlan
    cache: CachePlan
    sites: tuple[SiteLbPlan, ...]
    app: tuple[Member, ...]
    workers: tuple[Member, ...]


def member(h: Host) -> Member:
    return Member(h.name, h.address, h.site, h.provider)


def plan_placement(inv: Inventory) -> Placement:
    app_hosts = inv.with_role("app")
    return Placement(
        name=inv.name,
        failure_domains=inv.failure_domains,
        etcd=plan_etcd(inv),
        db=plan_db(inv),
        cache=plan_cache(inv),
        sites=tuple(plan_site_lb(inv, site, i) for i, site in enumerate(inv.sites) if inv.sites[site].vip),
        app=tuple(member(h) for h in app_hosts),
        workers=tuple(member(h) for h in inv.with_role("worker")),
    )


def plan_etcd(inv: Inventory) -> EtcdPlan:
    members = tuple(member(h) for h in inv.with_role("etcd"))
    svc = inv.services.etcd
    return EtcdPlan(members, f"{inv.name}-etcd", len(members) // 2 + 1, svc.client_port, svc.peer_port)


def largest_share(members: tuple[Member, ...], hosts: dict[str, Host], levels: tuple[str, ...]) -> tuple[int, str]:
    """The most members any single failure-domain unit holds, and which unit that is."""
    best, where = 0, ""
    for level in levels:
        counts: dict[str, int] = {}
        for m in members:
            unit = hosts[m.name].unit(level)
            counts[unit] = counts.get(unit, 0) + 1
        for unit, n in sorted(counts.items()):
            if n > best:
                best, where = n, f"{level} {unit}"
    return best, where


def plan_db(inv: Inventory) -> DbPlan:
    members = tuple(member(h) for h in inv.with_role("db"))
    svc = inv.services.db
    hosts = {h.name: h for h in inv.hosts}
    levels = tuple(dict.fromkeys((*inv.failure_domains, "host")))
    share, where = largest_share(members, hosts, levels)
    if not svc.synchronous or len(members) < 2:
        count, reason = 0, "asynchronous replication" if len(members) > 1 else "a single member"
    else:
        # A commit is acknowledged once the primary and `count` standbys have it. If one failure-domain unit
        # can hold the primary and `share - 1` standbys, `count` must exceed that so a standby outside the
        # unit always has every acknowledged commit.
        count = min(max(1, share), len(members) - 1)
        reason = (f"{where} holds {share} of {len(members)} db members" if share > 1
                  else "no failure-domain unit holds two db members")
    return DbPlan(inv.name, members, members[0].name if members else None, svc.synchronous, count, reason,
                  svc.port, svc.patroni_port)


def plan_cache(inv: Inventory) -> CachePlan:
    members = tuple(member(h) for h in inv.with_role("cache"))
    svc = inv.services.cache
    return CachePlan(members, members[0].name if members else None, members, len(members) // 2 + 1,
                     svc.port, svc.sentinel_port)


def plan_site_lb(inv: Inventory, site: str, index: int) -> SiteLbPlan:
    lbs = [h for h in inv.with_role("lb") if h.site == site]
    members = tuple(
        LbMember(h.name, h.address, max(VRRP_TOP_PRIORITY - VRRP_STEP * i, 1)) for i, h in enumerate(lbs)
    )
    return SiteLbPlan(site, inv.sites[site].provider, inv.sites[site].vip, VRRP_FIRST_ROUTER_ID + index,
                      members, plan_frontends(inv, site))


def plan_frontends(inv: Inventory, site: str) -> tuple[Frontend, ...]:
    lb, app, db = inv.services.lb, inv.services.app, inv.services.db
    fronts: list[Frontend] = []
    apps = inv.with_role("app")
    if apps:
        local = any(h.site == site for h in apps)
        backends = tuple(Backend(h.name, h.address, app.port, backup=local and h.site != site) for h in apps)
        fronts.append(Frontend("app", lb.http_port, "http", f"GET {app.health}", backends))
    dbs = inv.with_role("db")
    if dbs:
        for name, port, path in (("db-primary", lb.db_primary_port, "/primary"),
                                 ("db-replicas", lb.db_replica_port, "/replica")):
            backends = tuple(Backend(h.name, h.address, db.port, False, db.patroni_port) for h in dbs)
            fronts.append(Frontend(name, port, "tcp", f"GET {path} on :{db.patroni_port}", backends))
    caches = inv.with_role("cache")
    if caches:
        backends = tuple(Backend(h.name, h.address, inv.services.cache.port, False) for h in caches)
        fronts.append(Frontend("cache", lb.cache_port, "tcp", "redis role:master", backends))
    return tuple(fronts)


def units(inv: Inventory, level: str) -> dict[str, tuple[Host, ...]]:
    """Each unit of `level` (in a stable order) and the hosts it holds."""
    assert level in LEVELS
    out: dict[str, list[Host]] = {}
    for h in inv.hosts:
        out.setdefault(h.unit(level), []).append(h)
    return {u: tuple(hs) for u, hs in sorted(out.items())}
