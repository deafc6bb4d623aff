"""What every host gets: the firewall's admitted sources per port, kernel settings and /etc/hosts.

The firewall is default-deny inbound. A port is opened only on a host that runs the service listening on it,
and only to the hosts that talk to that service (computed here from the inventory's roles, so adding an
app host opens PostgreSQL's frontend on the load balancers to it at the next deploy):

    port                              on        admitted from
    ssh                               every     anywhere
    etcd client / peer                etcd      etcd + db / etcd
    PostgreSQL, Patroni REST          db        db + lb (HAProxy proxies in TCP mode and checks Patroni)
    Redis, Sentinel                   cache     cache + app + worker + lb
    app                               app       lb
    HTTP                              lb        anywhere
    HAProxy db primary/replicas,      lb        app + worker
      cache frontends
    HAProxy stats                     lb        lb
    VRRP (IP protocol 112)            lb        the same site's other lb hosts
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.hostconfig import ConfigContext


@dataclass(frozen=True, slots=True)
class FirewallRule:
    description: str
    protocol: str  # "tcp" or "vrrp" (IP protocol 112, no port)
    port: int | None
    sources: tuple[IPv4Address, ...] | None  # None: from anywhere; never empty (no rule is made then)


@dataclass(frozen=True, slots=True)
class Sysctl:
    key: str
    value: str
    reason: str

    @property
    def proc_path(self) -> str:
        return "/proc/sys/" + self.key.replace(".", "/")


@dataclass(frozen=True, slots=True)
class HostsEntry:
    address: IPv4Address
    name: str


@dataclass(frozen=True, slots=True)
class BaseHostConfig:
    host: str
    ssh_port: int
    firewall: tuple[FirewallRule, ...]
    sysctls: tuple[Sysctl, ...]  # sorted by key
    hosts_entries: tuple[HostsEntry, ...]  # every inventory host, by name


def sources(inv: Inventory, *roles: str) -> tuple[IPv4Address, ...]:
    """Addresses of the hosts with any of `roles`, each once, in host-name order."""
    return tuple(h.address for h in inv.hosts if any(h.has(r) for r in roles))


def firewall_rules(inv: Inventory, host: Host) -> tuple[FirewallRule, ...]:
    svc = inv.services
    wanted: list[tuple[str, str, int | None, tuple[IPv4Address, ...] | None]] = [("ssh", "tcp", host.ssh.port, None)]
    if host.has("etcd"):
        wanted += [
            ("etcd client", "tcp", svc.etcd.client_port, sources(inv, "etcd", "db")),
            ("etcd peer", "tcp", svc.etcd.peer_port, sources(inv, "etcd")),
        ]
    if host.has("db"):
        wanted += [
            ("PostgreSQL", "tcp", svc.db.port, sources(inv, "db", "lb")),
            ("Patroni REST API", "tcp", svc.db.patroni_port, sources(inv, "db", "lb")),
        ]
    if host.has("cache"):
        clients = sources(inv, "cache", "app", "worker", "lb")
        wanted += [
            ("Redis", "tcp", svc.cache.port, clients),
            ("Redis Sentinel", "tcp", svc.cache.sentinel_port, clients),
        ]
    if host.has("app"):
        wanted.append(("app", "tcp", svc.app.port, sources(inv, "lb")))
    if host.has("lb"):
        wanted.append(("HTTP", "tcp", svc.lb.http_port, None))
        if inv.with_role("db"):
            wanted += [
                ("HAProxy PostgreSQL primary", "tcp", svc.lb.db_primary_port, sources(inv, "app", "worker")),
                ("HAProxy PostgreSQL replicas", "tcp", svc.lb.db_replica_port, sources(inv, "app", "worker")),
            ]
        if inv.with_role("cache"):
            wanted.append(("HAProxy Redis", "tcp", svc.lb.cache_port, sources(inv, "app", "worker")))
        wanted.append(("HAProxy stats", "tcp", svc.lb.stats_port, sources(inv, "lb")))
        peers = tuple(h.address for h in inv.with_role("lb") if h.site == host.site and h.name != host.name)
        wanted.append(("VRRP from the site's other load balancers", "vrrp", None, peers))
    return tuple(FirewallRule(d, proto, port, src) for d, proto, port, src in wanted if src is None or src)


def sysctls(host: Host) -> tuple[Sysctl, ...]:
    wanted = [Sysctl("net.core.somaxconn", "4096", "listen backlog for HAProxy, gunicorn, PostgreSQL")]
    if host.has("lb"):
        wanted.append(Sysctl("net.ipv4.ip_nonlocal_bind", "1", "HAProxy binds the site VIP on the backup too"))
    if host.has("db"):
        wanted.append(Sysctl("vm.swappiness", "1", "keep PostgreSQL's memory out of swap"))
    if host.has("cache"):
        wanted.append(Sysctl("vm.overcommit_memory", "1", "Redis background saves fork without failing"))
    return tuple(sorted(wanted, key=lambda s: s.key))


def base_config(ctx: ConfigContext, host: Host) -> BaseHostConfig:
    inv = ctx.inv
    return BaseHostConfig(
        host=host.name,
        ssh_port=host.ssh.port,
        firewall=firewall_rules(inv, host),
        sysctls=sysctls(host),
        hosts_entries=tuple(HostsEntry(h.address, h.name) for h in inv.hosts),
    )
