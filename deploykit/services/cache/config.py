"""Per-host configuration of the `cache` role: one Redis server and one Sentinel on every cache host.

Every topology decision is made here from the placement and what the sentinels report: which server is the
master (the one the sentinels name, else the placement's first cache host; the others replicate from it),
the Sentinel quorum and the name the sentinels monitor the group under (the deployment's name). After the first
start the sentinels own the replication topology: a failover moves the master and Redis/Sentinel record that
in their own config files, which the role therefore only seeds (see sentinel.py).

Addresses: Redis and Sentinel listen on the host's mesh address (and 127.0.0.1, for redis-cli on the host),
announce it, and replicate from / monitor the master's mesh address: replication, Sentinel's gossip and the
AUTH password travel over the WireGuard mesh only (docs/network.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.secret import Secret
from deploykit.services.cache.placement import cache_plan
from deploykit.services.cache.sentinel import current_master, password_hash
from deploykit.services.contract import ConfigContext

# The secret this service owns: requirepass/masterauth of every server, Sentinel's too; its clients read it.
CACHE_PASSWORD = "cache-password"

# How long a failover may take before another sentinel may retry it, and the bound on reconfiguring the
# replicas. Sentinel's default (3 min) is meant for slow WAN links; ten detection periods keep a stuck
# failover from blocking the group for minutes while leaving a promotion on a busy host time to finish.
FAILOVER_TIMEOUT_FACTOR = 10
MIN_FAILOVER_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class CacheHostConfig:
    host: str
    mesh_address: IPv4Address  # where Redis and Sentinel listen, and what they announce
    master_name: str  # the name the sentinels monitor the group under
    master_address: IPv4Address  # the current master's mesh address (as the sentinels report it)
    is_master: bool  # this host is the current master
    master_running: bool  # the sentinels report it (False: nothing runs yet, the master starts first)
    members: tuple[IPv4Address, ...]  # every cache host's mesh address, by name
    port: int
    sentinel_port: int
    quorum: int
    down_after_ms: int
    failover_timeout_ms: int
    parallel_syncs: int
    password: Secret  # what every server and sentinel accepts, and uses to authenticate to the others
    previous_password: Secret | None  # accepted too while a rotation is under way

    @property
    def password_hashes(self) -> tuple[str, ...]:
        """SHA-256 of every password accepted (the new one first), as Redis's ACL takes them."""
        return tuple(password_hash(p.reveal()) for p in (self.password, self.previous_password) if p is not None)

    @property
    def replicaof(self) -> IPv4Address | None:
        """Whom this server replicates from when it is seeded (None: it is the master)."""
        return None if self.is_master else self.master_address

    @property
    def settings(self) -> tuple[tuple[str, str], ...]:
        """What every sentinel applies with `SENTINEL SET` (the seed holds the same)."""
        return (("quorum", str(self.quorum)), ("down-after-milliseconds", str(self.down_after_ms)),
                ("failover-timeout", str(self.failover_timeout_ms)), ("parallel-syncs", str(self.parallel_syncs)))


def cache_config(ctx: ConfigContext, host: Host) -> CacheHostConfig:
    plan = cache_plan(ctx.placement)
    if host.name not in {m.name for m in plan.members} or plan.master is None:
        raise ValueError(f"{host.name} is not a cache member")
    down_after = ctx.inv.services.cache.down_after_ms
    names = tuple(m.name for m in plan.members)
    master, reported = ctx.shared("cache-current-master", lambda: current_master(ctx, names, str(plan.master)))
    return CacheHostConfig(
        host=host.name,
        mesh_address=host.mesh_address,
        master_name=ctx.placement.name,
        master_address=ctx.inv.host(master).mesh_address,
        is_master=host.name == master,
        master_running=reported,
        members=tuple(ctx.inv.host(n).mesh_address for n in names),
        port=plan.port,
        sentinel_port=plan.sentinel_port,
        quorum=plan.quorum,
        down_after_ms=down_after,
        failover_timeout_ms=max(MIN_FAILOVER_TIMEOUT_MS, FAILOVER_TIMEOUT_FACTOR * down_after),
        # One replica resyncs at a time, so the others keep serving reads during a failover.
        parallel_syncs=1,
        password=ctx.secret(CACHE_PASSWORD),
        previous_password=ctx.previous(CACHE_PASSWORD),
    )
