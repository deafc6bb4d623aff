"""The validated, frozen inventory: what every later layer (plan, roles, lab) reads.

Nothing here parses YAML or checks input; `deploykit.inventory.load` builds these objects only from an
inventory that passed validation, so every field can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

LEVELS: tuple[str, ...] = ("provider", "site", "rack", "host")


# SSH connection starts (handshake and authentication) in flight at once, over the whole run: each host is its
# own sshd (MaxStartups 10:30:100 counts per sshd, and deploykit opens one connection per host), so what this
# bounds is the burst of new connections leaving this machine. See docs/inventory.md.
DEFAULT_MAX_STARTUPS = 32


@dataclass(frozen=True, slots=True)
class SshSettings:
    user: str
    port: int
    identity_file: Path
    known_hosts: Path  # absolute (resolved against the inventory's directory)
    max_startups: int = DEFAULT_MAX_STARTUPS  # the inventory's (a setting of the whole run, the same on every host)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    provider: str
    vip: IPv4Address | None
    interface: str = "eth0"


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    address: IPv4Address
    site: str
    provider: str
    rack: str | None
    roles: tuple[str, ...]  # in the canonical order of the known roles (the registered services' by default)
    ssh: SshSettings
    line: int  # line of the inventory entry this host came from
    interface: str = "eth0"  # network interface of its address (keepalived puts the site's VIP there)
    # Its address on the private WireGuard mesh: every internal service listens and connects there
    # (see docs/network.md). Set by the inventory loader (deploykit/inventory/mesh.py); a default for models
    # built by hand in tests.
    mesh_address: IPv4Address = IPv4Address("0.0.0.0")

    def has(self, role: str) -> bool:
        return role in self.roles

    def unit(self, level: str) -> str:
        """This host's unit at a failure-domain level (a host without a rack is its own rack)."""
        if level == "provider":
            return self.provider
        if level == "site":
            return self.site
        if level == "rack":
            return f"{self.site}/{self.rack}" if self.rack else f"{self.site}/{self.name}"
        return self.name


@dataclass(frozen=True, slots=True)
class AppService:
    port: int = 8000
    health: str = "/healthz"
    min_capacity: float = 0.5  # fraction of app hosts that must survive for the tier to count as "up"
    source: str | None = None  # directory of the app to deploy (default: the bundled chirp demo)
    command: str | None = None  # command that serves the app (default: chirp's gunicorn)
    workers: int = 2  # gunicorn workers per app host
    batch_size: int | str = "25%"  # app hosts restarted at a time on a rolling release: a count or "N%"

    def batch_count(self, hosts: int) -> int:
        """The batch size for `hosts` app hosts: the count, or the percentage rounded down (at least 1)."""
        if isinstance(self.batch_size, str):
            return max(1, hosts * int(self.batch_size.rstrip("%")) // 100)
        return self.batch_size


@dataclass(frozen=True, slots=True)
class DbService:
    port: int = 5432
    synchronous: bool = True
    watchdog: bool = True
    patroni_port: int = 8008
    ttl: int = 12
    loop_wait: int = 2
    retry_timeout: int = 4


@dataclass(frozen=True, slots=True)
class CacheService:
    port: int = 6379
    sentinel_port: int = 26379
    down_after_ms: int = 3000


@dataclass(frozen=True, slots=True)
class EtcdService:
    client_port: int = 2379
    peer_port: int = 2380


@dataclass(frozen=True, slots=True)
class LbTls:
    """Where the edge certificate comes from: the user's files (checked when the inventory is loaded), or,
    without them, deploykit's CA for the deployment (kept in the secrets store, see services/lb/tls.py)."""

    certificate: Path | None = None  # absolute; the certificate then its chain (PEM)
    key: Path | None = None  # absolute; its private key (PEM): read at plan time as a secret
    warn_days: int = 30  # a certificate this close to its expiry is a plan warning

    @property
    def own(self) -> bool:
        """The user's certificate (else deploykit's CA issues one)."""
        return self.certificate is not None


@dataclass(frozen=True, slots=True)
class LbService:
    http_port: int = 80
    https_port: int = 443
    stats_port: int = 8404
    db_primary_port: int = 5000
    db_replica_port: int = 5001
    cache_port: int = 6380
    check_interval_ms: int = 1000
    hsts: int = 0  # Strict-Transport-Security max-age (seconds) on HTTPS answers; 0: none
    tls: LbTls = field(default_factory=LbTls)


@dataclass(frozen=True, slots=True)
class DnsService:
    ttl: int = 30  # seconds resolvers may keep an answer of the public names
    names: tuple[str, ...] = ()  # public names besides the apex and www, as labels under the domain
    check_interval: int = 2  # seconds between PowerDNS's health checks of the sites' entry addresses
    check_timeout: int = 2  # seconds a health check may take before the address counts as down


@dataclass(frozen=True, slots=True)
class BackupService:
    """pgBackRest repositories on the `backup` hosts (services/backup): retention, schedules, archiving."""

    retention_full: int = 2  # full backups kept per repository (with their differentials and WAL)
    retention_diff: int = 6  # differential backups kept per repository
    full: str = "Sun *-*-* 01:00:00"  # systemd OnCalendar of the full backups
    diff: str = "Mon..Sat *-*-* 01:00:00"  # systemd OnCalendar of the differential backups
    archive_timeout: int = 60  # seconds: an idle primary still archives a WAL segment this often (RPO bound)
    # MiB of WAL PostgreSQL may keep for an unreachable repository; beyond it pgBackRest drops the waiting WAL
    # (PostgreSQL keeps serving, but point-in-time recovery has a gap until the next backup).
    archive_queue_max_mib: int = 4096
    process_max: int = 2  # pgBackRest processes per backup or restore


SESSION_POOL_DEFAULT = 5  # services.pooler.session_pool_size for up to three worker hosts
MIN_CLIENT_CONN = 1000  # the least services.pooler.max_client_conn computed


def default_session_pool(worker_hosts: int) -> int:
    """SESSION_POOL_DEFAULT or, when larger, two per worker host (its LISTEN, and the one it opens again while
    the old one, of a client that died, is not closed yet), the release's migration lock and a spare."""
    return max(SESSION_POOL_DEFAULT, 2 * worker_hosts + 2)


@dataclass(frozen=True, slots=True)
class PoolerService:
    """PgBouncer on every db host (services/pooler): what the app and the workers connect to."""

    port: int = 6432
    pool_size: int = 20  # server connections of the transaction pool, per db host
    # Server connections of the session pool (migrations' advisory lock, each worker host's LISTEN); None:
    # SESSION_POOL_DEFAULT, or more when the worker hosts need it (`session_pool`).
    session_pool_size: int | None = None
    reserve_pool_size: int = 5  # extra server connections a transaction-pool client waiting 1 s may open
    # Client connections each pooler accepts; None: computed from the app (`client_limit`).
    max_client_conn: int | None = None
    statement_timeout: int = 5  # seconds, set on the transaction pool's server connections; 0: none
    query_wait_timeout: int = 10  # seconds a client may wait for a server connection before an error

    def session_pool(self, worker_hosts: int) -> int:
        """The session pool's size: the setting, else `default_session_pool`."""
        return self.session_pool_size if self.session_pool_size is not None else default_session_pool(worker_hosts)

    def client_limit(self, clients: int) -> int:
        """max_client_conn: the setting, else twice the `clients` the app opens (a rolling restart's old and new
        processes overlap; reconnections after a failover), at least MIN_CLIENT_CONN."""
        if self.max_client_conn is not None:
            return self.max_client_conn
        return max(MIN_CLIENT_CONN, 2 * clients)


DEFAULT_MESH_NETWORK = IPv4Network("10.213.0.0/16")
MESH_INTERFACE = "mesh0"


@dataclass(frozen=True, slots=True)
class MeshNetwork:
    """The private WireGuard network between all inventory hosts."""

    network: IPv4Network = DEFAULT_MESH_NETWORK
    port: int = 51820  # WireGuard's UDP port on every host's public address
    interface: str = MESH_INTERFACE


@dataclass(frozen=True, slots=True)
class Services:
    app: AppService = field(default_factory=AppService)
    db: DbService = field(default_factory=DbService)
    cache: CacheService = field(default_factory=CacheService)
    etcd: EtcdService = field(default_factory=EtcdService)
    lb: LbService = field(default_factory=LbService)
    dns: DnsService = field(default_factory=DnsService)
    backup: BackupService = field(default_factory=BackupService)
    pooler: PoolerService = field(default_factory=PoolerService)


@dataclass(frozen=True, slots=True)
class Inventory:
    path: Path  # absolute path of the inventory file
    name: str
    domain: str
    failure_domains: tuple[str, ...]
    ssh: SshSettings
    sites: dict[str, Site]  # insertion order = file order
    hosts: tuple[Host, ...]  # in natural name order (lb-2 before lb-10): every consumer iterates in this order
    services: Services
    warnings: tuple[str, ...] = ()
    mesh: MeshNetwork = field(default_factory=MeshNetwork)
    # Indexes built once: placement, firewall rules and the resilience proof ask for a role's hosts per host
    # and per scenario, which must not cost a walk over every host each time (5,000 hosts).
    _by_name: dict[str, Host] = field(init=False, repr=False, compare=False)
    _by_role: dict[str, tuple[Host, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_role: dict[str, list[Host]] = {}
        for h in self.hosts:
            for r in h.roles:
                by_role.setdefault(r, []).append(h)
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hosts})
        object.__setattr__(self, "_by_role", {r: tuple(hs) for r, hs in by_role.items()})

    @property
    def directory(self) -> Path:
        return self.path.parent

    def host(self, name: str) -> Host:
        return self._by_name[name]

    def with_role(self, role: str) -> tuple[Host, ...]:
        return self._by_role.get(role, ())

    def in_site(self, site: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.site == site)

    @property
    def providers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for s in self.sites.values():
            seen.setdefault(s.provider, None)
        return tuple(seen)
