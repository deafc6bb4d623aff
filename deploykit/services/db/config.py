"""One PostgreSQL 15 member managed by Patroni (Debian's postgresql-15 and patroni 3.0 packages).

Failover timing (`services.db`, defaults ttl 12 / loop_wait 2 / retry_timeout 4): the leader key lives `ttl`
seconds; a dead primary is replaced once it expires and a standby's next loop (every `loop_wait`) takes the
lock. The issue measured the leader elected 17 s after killing the primary with these values, against
~40 s with Patroni's defaults (30 / 10 / 10). Patroni requires ttl >= loop_wait + 2 * retry_timeout
(12 >= 2 + 8): a primary that cannot renew its key within retry_timeout demotes itself before the key can
expire, so two primaries never overlap. Lower values trade spurious failovers on cross-provider jitter.

Everything under `dcs` is Patroni's cluster-wide ("dynamic") configuration: it lives in etcd, written from
`bootstrap.dcs` once when the cluster is initialised. Later changes reach the cluster through
`patronictl edit-config` (see state.py).

Addresses: PostgreSQL, replication, pg_rewind and Patroni's REST API travel over the WireGuard mesh only:
every member listens on its mesh address (PostgreSQL on 127.0.0.1 too, for local tools), advertises it, and
pg_hba admits the other members by their mesh addresses (docs/network.md). The app's connections come from the
pooler on the same host (services/pooler) over the unix socket: no client host reaches PostgreSQL's port.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.placement import Placement
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.db.placement import DbPlan, db_plan
from deploykit.services.etcd.placement import etcd_plan
from deploykit.services.lb.placement import LbMember, lb_sites

if TYPE_CHECKING:
    from deploykit.services.backup.archiving import WalArchiving

PG_VERSION = 15
CONFIG_PATH = "/etc/patroni/config.yml"  # Debian's patroni.service reads it
# Patroni's on_role_change callback, which runs every executable in ROLE_CHANGE_HOOKS: services that must follow
# this member's promotion or demotion put a hook there (the pooler's, services/pooler).
ROLE_CHANGE_SCRIPT = "/etc/patroni/on_role_change"
ROLE_CHANGE_HOOKS = "/etc/patroni/on_role_change.d"
APP_USER = "chirp"
APP_DATABASE = "chirp"
SUPERUSER = "postgres"
REPLICATION_USER = "replicator"
REST_USER = "patroni"
# The secrets this service owns (the app reads APP_PASSWORD too).
SUPERUSER_PASSWORD = "db-superuser-password"
REPLICATION_PASSWORD = "db-replication-password"
REST_PASSWORD = "patroni-rest-password"
APP_PASSWORD = "db-app-password"
SECRETS = (SUPERUSER_PASSWORD, REPLICATION_PASSWORD, REST_PASSWORD, APP_PASSWORD)
# Patroni's default: in asynchronous mode a standby more than 1 MiB behind is not promoted. (In synchronous
# mode Patroni promotes only the synchronous standby anyway.)
MAXIMUM_LAG_ON_FAILOVER = 1024 * 1024
ADMIN_CONNECTIONS = 20  # psql sessions, monitoring, superuser_reserved_connections; on top of the pools'
PATRONI_CONNECTIONS = 2  # Patroni's own (its loop's queries, the REST API's health checks)
PGBACKREST_CONNECTIONS = 2  # a backup's (pg_backup_start/stop) and an archive check's at the same time
MIN_MAX_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class HbaRule:
    type: str  # local | host
    database: str
    user: str
    address: str  # "" for local
    method: str
    comment: str


@dataclass(frozen=True, slots=True)
class DcsConfig:
    ttl: int
    loop_wait: int
    retry_timeout: int
    maximum_lag_on_failover: int
    synchronous_mode: bool
    synchronous_node_count: int
    sync_reason: str
    use_slots: bool
    use_pg_rewind: bool
    parameters: tuple[tuple[str, str], ...]  # PostgreSQL settings every member must share


@dataclass(frozen=True, slots=True)
class DbHostConfig:
    name: str
    scope: str
    mesh_address: IPv4Address  # where PostgreSQL and the REST API listen and are reached
    mesh_unit: str  # the mesh's systemd unit: Patroni starts after it (see state.py, the drop-in)
    port: int
    patroni_port: int
    bootstrap_member: bool  # the member that initialises the cluster on the first deploy
    listen: str  # "<mesh address>,127.0.0.1:port": Patroni takes the port once, after every address
    connect_address: str
    rest_listen: str
    data_dir: str
    bin_dir: str
    config_path: str
    etcd_hosts: tuple[str, ...]  # <mesh address>:client_port of every etcd member
    dcs: DcsConfig
    pg_hba: tuple[HbaRule, ...]
    watchdog: bool
    superuser: str
    superuser_password: Secret
    replication_user: str
    replication_password: Secret
    rest_user: str
    rest_password: Secret
    app_user: str
    app_database: str
    app_password: Secret
    rollout_order: int  # 0: the leader (or nobody leads yet), 1: a replica of a running leader
    on_role_change: str  # Patroni's callback script (ROLE_CHANGE_SCRIPT)
    role_change_hooks: str  # the directory of its hooks
    archiving: WalArchiving  # restore_command and replica methods (archive_command is in dcs.parameters)


def primary_load_balancers(placement: Placement, site: str) -> tuple[LbMember, ...]:
    """The load balancers through which clients in `site` reach the primary (HAProxy's db-primary frontend,
    on each one's mesh address): the site's own, else those of the first site that has some, highest VRRP
    priority first. None without any load balancer: clients then connect to the members directly."""
    sites = [s for s in lb_sites(placement) if s.members]
    chosen = next((s for s in sites if s.site == site), sites[0] if sites else None)
    return chosen.members if chosen is not None else ()


def max_connections(inv: Inventory) -> int:
    """Sized from the pool, not from the number of app processes: the app and the workers reach PostgreSQL only
    through the pooler on the same host (services/pooler), which opens at most pool_size + reserve_pool_size
    server connections for its transaction pool and session_pool_size for its session pool, all as the app's
    one user. Every member gets the same value (Patroni requires it: a replica's must not be lower than its
    primary's), each being able to become the primary whose pooler takes every client. On top: administration
    (psql, monitoring, the superuser's reserved slots), Patroni's own and pgBackRest's (a backup and an archive
    check); replication connections are not counted here (max_wal_senders). At least MIN_MAX_CONNECTIONS, which
    is what applies with the default pools and up to a few dozen worker hosts."""
    from deploykit.services.pooler.config import server_connections  # (the pooler's config imports this module)

    pools = server_connections(inv)
    return max(MIN_MAX_CONNECTIONS, ADMIN_CONNECTIONS + pools + PATRONI_CONNECTIONS + PGBACKREST_CONNECTIONS)


def shared_parameters(ctx: ConfigContext, archiving: WalArchiving) -> tuple[tuple[str, str], ...]:
    senders = max(10, len(db_plan(ctx.placement).members) + 4)
    return (
        # On from the first start (a restart to change): without backup hosts the command archives nothing.
        ("archive_command", archiving.archive_command),
        ("archive_mode", "on"),
        ("archive_timeout", f"{archiving.archive_timeout}s"),
        ("hot_standby", "on"),
        ("max_connections", str(max_connections(ctx.inv))),
        ("max_replication_slots", str(senders)),
        ("max_wal_senders", str(senders)),
        ("password_encryption", "scram-sha-256"),
        ("wal_keep_size", "1GB"),
        ("wal_level", "replica"),
    )


def hba_rules(inv: Inventory) -> tuple[HbaRule, ...]:
    method = "scram-sha-256"
    rules = [
        HbaRule("local", "all", SUPERUSER, "", "peer", "Patroni and the postgres OS user, over the socket"),
        HbaRule("host", "all", SUPERUSER, "127.0.0.1/32", method, "superuser on this host"),
        # Before a running replica follows a new leader, Patroni reads its own timeline over a replication
        # connection to "localhost" (rewind.py, IDENTIFY_SYSTEM); refused, it never decides whether to rewind
        # and the replica stays on the old leader's timeline, not streaming (seen on the lab after failovers).
        HbaRule("host", "replication", REPLICATION_USER, "127.0.0.1/32", method,
                "Patroni's own replication connection on this host (its timeline, before following a new leader)"),
    ]
    # Every other host arrives over the mesh, from its mesh address.
    dbs = inv.with_role("db")
    rules += [
        HbaRule("host", "all", SUPERUSER, f"{h.mesh_address}/32", method, f"superuser (pg_rewind) from {h.name}")
        for h in dbs
    ]
    rules += [
        HbaRule("host", "replication", REPLICATION_USER, f"{h.mesh_address}/32", method,
                f"replication from {h.name}")
        for h in dbs
    ]
    # The app and the workers reach PostgreSQL only through the pooler on this host (services/pooler), over
    # the unix socket; nothing connects as the app's user over the network.
    rules.append(HbaRule("local", APP_DATABASE, APP_USER, "", method, "the app, through PgBouncer on this host"))
    return tuple(rules)


def held(ctx: ConfigContext, name: str) -> Secret:
    """The value the cluster holds for `name`: while a rotation is under way, the previous one. PostgreSQL
    takes one password per role, so the roles change in the rotation's second apply, once every client (the
    app: it tries the new password, then the previous one) was given the new value in the first."""
    return ctx.previous(name) or ctx.secret(name)


def db_config(ctx: ConfigContext, host: Host) -> DbHostConfig:
    from deploykit.services.backup.archiving import wal_archiving  # (backup's package imports this one)

    plan, svc, archiving = db_plan(ctx.placement), ctx.inv.services.db, wal_archiving(ctx.inv)
    if host.name not in {m.name for m in plan.members}:
        raise ValueError(f"{host.name} is not a db member")
    dcs = DcsConfig(
        ttl=svc.ttl,
        loop_wait=svc.loop_wait,
        retry_timeout=svc.retry_timeout,
        maximum_lag_on_failover=MAXIMUM_LAG_ON_FAILOVER,
        synchronous_mode=plan.synchronous and plan.sync_standbys > 0,
        synchronous_node_count=max(plan.sync_standbys, 1),
        sync_reason=plan.sync_reason,
        use_slots=True,
        # A former primary rejoins by rewinding its diverged WAL instead of a full re-clone; needs data
        # checksums (initdb below) and the superuser over the network from the other members (pg_hba).
        use_pg_rewind=True,
        parameters=shared_parameters(ctx, archiving),
    )
    return DbHostConfig(
        name=host.name,
        scope=plan.scope,
        mesh_address=host.mesh_address,
        mesh_unit=f"wg-quick@{ctx.inv.mesh.interface}.service",
        port=plan.port,
        patroni_port=plan.patroni_port,
        bootstrap_member=host.name == plan.bootstrap,
        listen=f"{host.mesh_address},127.0.0.1:{plan.port}",
        connect_address=f"{host.mesh_address}:{plan.port}",
        rest_listen=f"{host.mesh_address}:{plan.patroni_port}",
        data_dir=f"/var/lib/postgresql/{PG_VERSION}/{plan.scope}",
        bin_dir=f"/usr/lib/postgresql/{PG_VERSION}/bin",
        config_path=CONFIG_PATH,
        etcd_hosts=etcd_plan(ctx.placement).endpoints,
        dcs=dcs,
        pg_hba=hba_rules(ctx.inv),
        watchdog=svc.watchdog,
        superuser=SUPERUSER,
        superuser_password=held(ctx, SUPERUSER_PASSWORD),
        replication_user=REPLICATION_USER,
        replication_password=held(ctx, REPLICATION_PASSWORD),
        rest_user=REST_USER,
        rest_password=held(ctx, REST_PASSWORD),
        app_user=APP_USER,
        app_database=APP_DATABASE,
        app_password=held(ctx, APP_PASSWORD),
        rollout_order=replica_order(ctx, host, plan),
        on_role_change=ROLE_CHANGE_SCRIPT,
        role_change_hooks=ROLE_CHANGE_HOOKS,
        archiving=archiving,
    )


# Whether the host's Patroni leads, asked of its REST API (address from its config): "200" leads, "503" does
# not, "000" or nothing: not running.
LEADER_FACT = "db-leader"
READ_LEADER = (f"a=$(awk '/^restapi:/ {{r = 1}} r && $1 == \"listen:\" {{print $2; exit}}' {CONFIG_PATH} "
               "2>/dev/null); [ -n \"$a\" ] || exit 0; "
               "curl -s -o /dev/null -m 3 -w '%{http_code}' \"http://$a/primary\"; true")


def replica_order(ctx: ConfigContext, host: Host, plan: DbPlan) -> int:
    """1 for a host that does not lead while another member does (it changes after the leader), else 0."""
    leaders = {m.name for m in plan.members if ctx.fact(m.name, LEADER_FACT) == "200"}
    return 1 if leaders and host.name not in leaders else 0
