"""The shape of inventory format v1, as pydantic models (types, unknown keys, ranges of numbers).

Only the shape lives here; rules that relate several parts of the file (sites named by hosts, addresses
that collide, quorum sizes) are in `checks.py`. Models are strict: `port: "22"` is an error, not a guess.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
from pydantic_core import PydanticCustomError

Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=63)]
# A DNS name: at most 253 characters in all (each label's 63 and the syntax are checked in checks.py).
Domain = Annotated[StrictStr, Field(min_length=1, max_length=253)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class SshSpec(_Spec):
    user: Name | None = None
    port: Port | None = None
    identity_file: StrictStr | None = None
    known_hosts: StrictStr | None = None
    # Connection starts in flight over the whole run (model.DEFAULT_MAX_STARTUPS); top-level `ssh` only.
    max_startups: Annotated[StrictInt, Field(ge=1, le=1024)] | None = None


class HostSshSpec(SshSpec):
    """A host's own `ssh`: any key of the top-level one but `max_startups`, which bounds the whole run."""

    @field_validator("max_startups")
    @classmethod
    def _whole_run(cls, value: int | None) -> int | None:
        if value is not None:
            raise PydanticCustomError("whole_run", "a setting of the whole run, allowed in the top-level ssh "
                                      "section only")
        return value


Interface = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.:-]{1,15}$")]


class SiteSpec(_Spec):
    provider: Name
    vip: StrictStr | None = None
    interface: Interface = "eth0"  # the network interface the site's servers (and its VIP) use


class HostSpec(_Spec):
    address: StrictStr
    site: Name
    roles: list[StrictStr] = Field(default_factory=list)
    rack: Name | None = None
    provider: Name | None = None  # optional; if given it must match the site's provider
    interface: Interface | None = None  # overrides the site's interface
    ssh: HostSshSpec | None = None
    mesh_address: StrictStr | None = None  # pins its mesh address (a range: consecutive addresses from here)


BATCH_PERCENT = re.compile(r"([1-9][0-9]?|100)%")


class AppSpec(_Spec):
    port: Port = 8000
    health: StrictStr = "/healthz"
    min_capacity: Annotated[float, Field(gt=0, le=1)] = 0.5
    source: StrictStr | None = None
    command: StrictStr | None = None
    workers: Annotated[StrictInt, Field(ge=1, le=64)] = 2
    # App hosts changed at a time by a rolling release (after the canary): a count, or a percentage of the app
    # hosts (rounded down, at least one). Hosts not serving yet (a first deploy) are not rolled: see the runner.
    batch_size: Any = "25%"

    @field_validator("batch_size")
    @classmethod
    def _batch_size(cls, value: Any) -> int | str:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
        if isinstance(value, str) and BATCH_PERCENT.fullmatch(value):
            return value
        raise ValueError("write a number of hosts (1 or more) or a percentage of the app hosts such as '25%'")


class WorkerSpec(_Spec):
    """No settings yet: workers run the app's own worker command on `worker` hosts."""


class DbSpec(_Spec):
    port: Port = 5432
    synchronous: StrictBool = True
    watchdog: StrictBool = True
    patroni_port: Port = 8008
    ttl: Annotated[StrictInt, Field(ge=5, le=600)] = 12
    loop_wait: Annotated[StrictInt, Field(ge=1, le=60)] = 2
    retry_timeout: Annotated[StrictInt, Field(ge=1, le=300)] = 4


class CacheSpec(_Spec):
    port: Port = 6379
    sentinel_port: Port = 26379
    down_after_ms: Annotated[StrictInt, Field(ge=500, le=600_000)] = 3000


class EtcdSpec(_Spec):
    client_port: Port = 2379
    peer_port: Port = 2380


class LbTlsSpec(_Spec):
    """The edge certificate: the user's own (both paths, relative to the inventory file), or none of them
    (deploykit's CA for the deployment issues one)."""

    certificate: StrictStr | None = None  # PEM: the certificate, then its chain
    key: StrictStr | None = None  # PEM private key, without a passphrase
    warn_days: Annotated[StrictInt, Field(ge=0, le=3650)] = 30  # a plan warns this close to the expiry


class LbSpec(_Spec):
    http_port: Port = 80
    https_port: Port = 443
    stats_port: Port = 8404
    db_primary_port: Port = 5000
    db_replica_port: Port = 5001
    cache_port: Port = 6380
    check_interval_ms: Annotated[StrictInt, Field(ge=100, le=60_000)] = 1000
    # Strict-Transport-Security max-age in seconds on HTTPS answers (at most two years); 0: no header.
    hsts: Annotated[StrictInt, Field(ge=0, le=63_072_000)] = 0
    tls: LbTlsSpec = Field(default_factory=LbTlsSpec)


class DnsSpec(_Spec):
    ttl: Annotated[StrictInt, Field(ge=1, le=86_400)] = 30
    names: list[StrictStr] = Field(default_factory=list)  # public names besides the apex and www (labels)
    check_interval: Annotated[StrictInt, Field(ge=1, le=60)] = 2
    check_timeout: Annotated[StrictInt, Field(ge=1, le=30)] = 2


class BackupSpec(_Spec):
    retention_full: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    retention_diff: Annotated[StrictInt, Field(ge=1, le=1000)] = 6
    full: StrictStr = "Sun *-*-* 01:00:00"  # systemd OnCalendar
    diff: StrictStr = "Mon..Sat *-*-* 01:00:00"  # systemd OnCalendar
    archive_timeout: Annotated[StrictInt, Field(ge=10, le=3600)] = 60
    archive_queue_max_mib: Annotated[StrictInt, Field(ge=64, le=1_048_576)] = 4096
    process_max: Annotated[StrictInt, Field(ge=1, le=32)] = 2

    @field_validator("full", "diff")
    @classmethod
    def _calendar(cls, value: str) -> str:
        if not value.strip() or any(c in value for c in "\n'\"`$;&|<>"):
            raise ValueError("write a systemd OnCalendar expression such as 'Sun *-*-* 01:00:00' or 'daily'")
        return value.strip()


PoolSize = Annotated[StrictInt, Field(ge=1, le=10_000)]


class PoolerSpec(_Spec):
    """PgBouncer on the db hosts (model.PoolerService; whole-inventory rules in checks.py)."""

    port: Port = 6432
    pool_size: PoolSize = 20
    session_pool_size: PoolSize | None = None  # default: 5, or twice the worker hosts + 2 when more
    reserve_pool_size: Annotated[StrictInt, Field(ge=0, le=10_000)] = 5
    max_client_conn: Annotated[StrictInt, Field(ge=10, le=1_000_000)] | None = None  # default: computed
    statement_timeout: Annotated[StrictInt, Field(ge=0, le=86_400)] = 5  # seconds; 0: none
    query_wait_timeout: StrictInt = 10  # seconds (1-3600)

    @field_validator("query_wait_timeout")
    @classmethod
    def _query_wait_timeout(cls, value: int) -> int:
        if not 1 <= value <= 3600:
            raise PydanticCustomError("wait_range", "write the seconds a client may wait for a server connection, "
                                      "1 to 3600 (PgBouncer reads 0 as 'wait forever': a busy pool would then hold "
                                      "every client)")
        return value


class MeshSpec(_Spec):
    network: StrictStr | None = None  # default: model.DEFAULT_MESH_NETWORK
    port: Port = 51820


class ServicesSpec(_Spec):
    app: AppSpec = Field(default_factory=AppSpec)
    worker: WorkerSpec = Field(default_factory=lambda: WorkerSpec())
    db: DbSpec = Field(default_factory=DbSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    etcd: EtcdSpec = Field(default_factory=EtcdSpec)
    lb: LbSpec = Field(default_factory=LbSpec)
    dns: DnsSpec = Field(default_factory=DnsSpec)
    backup: BackupSpec = Field(default_factory=BackupSpec)
    pooler: PoolerSpec = Field(default_factory=PoolerSpec)


class TopSpec(_Spec):
    """Top level, with `sites` and `hosts` checked entry by entry (so one bad entry hides no other)."""

    version: StrictInt
    name: Name
    domain: Domain
    failure_domains: list[StrictStr] = Field(default_factory=lambda: ["host"])
    ssh: SshSpec = Field(default_factory=SshSpec)
    sites: dict[StrictStr, object] = Field(default_factory=dict)
    hosts: dict[StrictStr, object]
    services: ServicesSpec = Field(default_factory=ServicesSpec)
    mesh: MeshSpec = Field(default_factory=MeshSpec)


SECTION_KEYS: dict[str, list[str]] = {
    "": list(TopSpec.model_fields),
    "ssh": list(SshSpec.model_fields),
    "site": list(SiteSpec.model_fields),
    "host": list(HostSpec.model_fields),
}
