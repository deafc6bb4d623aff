"""One db host's PgBouncer (Debian bookworm's pgbouncer 1.18): the bounded pools the app and the workers reach
PostgreSQL through, so that PostgreSQL's connections follow the pool, not the number of app processes.

Pools (PgBouncer "databases", both on the app's one database and user, server connections over the unix socket
of the PostgreSQL on the same host):

- `chirp`, transaction pooling: `pool_size` server connections (+ `reserve_pool_size` for a client that waited
  RESERVE_POOL_TIMEOUT_S), each set up with `statement_timeout` by `connect_query`. What the app and the workers
  use for their queries: a server connection is theirs for one transaction only.
- `chirp_session`, session pooling: `session_pool_size` server connections for what needs a session of its own
  (the migrations' advisory lock, each worker host's LISTEN), kept by a client until it disconnects.

A client waits at most `query_wait_timeout` for a server connection, then gets an error (never an endless
queue). Clients authenticate with SCRAM against `auth_file`, which holds the app's password as PostgreSQL holds
it (db's `held`: during a rotation, the previous value until the rotation's second apply, exactly as PostgreSQL
itself); PgBouncer logs into PostgreSQL with the same password (scram-sha-256 on the local socket, pg_hba).

max_client_conn, when not set: every client connection the app may open at once, doubled (a rolling release's
old and new processes overlap; everything reconnects after a failover), at least MIN_CLIENT_CONN. The app opens
one connection per gunicorn thread of every process of every app host, and each worker host two (its LISTEN
and its work): app hosts x services.app.workers x threads (gunicorn's --threads in the web command, else 1) +
worker hosts x WORKER_CONNECTIONS. Every pooler gets them all: through the load balancers they all go to the
primary's.

The admin console needs no password and no admin_users: PgBouncer admits user `pgbouncer` on its unix socket
from its own OS user (postgres) as an administrator (`console_command`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import TYPE_CHECKING

from deploykit.inventory.model import Host, Inventory
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.db.config import (
    APP_DATABASE,
    APP_PASSWORD,
    APP_USER,
    LEADER_FACT,
    ROLE_CHANGE_HOOKS,
    held,
)
from deploykit.services.db.placement import db_plan

if TYPE_CHECKING:
    from deploykit.services.app.config import AppSource

NAME = "pooler"
HOST_ROLE = "db"
SESSION_DATABASE = f"{APP_DATABASE}_session"  # the session pool's name (the app's DB_SESSION_NAME)
SOCKET_DIR = "/var/run/postgresql"  # PostgreSQL's unix socket (Debian's), and PgBouncer's own
CONFIG_PATH = "/etc/pgbouncer/pgbouncer.ini"  # Debian's pgbouncer.service reads it
AUTH_FILE = "/etc/pgbouncer/userlist.txt"
ROLE_CHANGE_HOOK = f"{ROLE_CHANGE_HOOKS}/pgbouncer-reconnect"
WORKER_CONNECTIONS = 2  # per worker host (chirp's worker: its LISTEN and its work)
RESERVE_POOL_TIMEOUT_S = 1  # a client waiting this long may use the reserve pool
SERVER_LOGIN_RETRY_S = 1  # after a failed login to PostgreSQL (restarting, failing over), retry this soon
SERVER_CONNECT_TIMEOUT_S = 5  # a login to the local PostgreSQL that takes longer has failed
SERVER_CHECK_DELAY_S = 10  # a server connection idle longer is checked (`select 1`) before it is reused
# Keepalives on client connections: a lost client (a load balancer gone with its proxied connections) frees its
# session-pool connection within about a minute, not after the kernel's two hours.
TCP_KEEPIDLE_S, TCP_KEEPINTVL_S, TCP_KEEPCNT = 30, 10, 3
# Startup parameters a client may send that PgBouncer cannot track: ignored (pgbouncer 1.18 refuses `options`,
# which the app does not send when pooled, CHIRP_DB_POOLED=1).
IGNORED_STARTUP_PARAMETERS = ("extra_float_digits",)
NOFILE_FLOOR = 65536  # LimitNOFILE at least this: it changes (a restart) only for a very large max_client_conn
# Seconds systemd gives PgBouncer's safe shutdown (SIGINT: it waits for every server connection to be released,
# which a session-pool client such as a worker's LISTEN never does) before it kills it, beyond statement_timeout.
STOP_GRACE_S = 10
ROLE_CHANGE_WAIT_S = 120  # how long the role-change hook waits for PostgreSQL to have its new role


@dataclass(frozen=True, slots=True)
class Pool:
    """One PgBouncer database: what clients name, where its server connections go, how they are pooled."""

    name: str  # what clients connect to (their dbname)
    dbname: str  # PostgreSQL's database
    mode: str  # transaction | session
    size: int  # server connections
    reserve: int  # more server connections for a client that waited RESERVE_POOL_TIMEOUT_S
    connect_query: str | None  # run on each new server connection


@dataclass(frozen=True, slots=True)
class PoolerHostConfig:
    name: str
    mesh_address: IPv4Address
    listen: tuple[str, ...]  # listen_addr: the mesh address (clients, the load balancers) and 127.0.0.1
    port: int
    socket_dir: str
    pg_port: int  # the local PostgreSQL's, on the unix socket
    pools: tuple[Pool, ...]
    databases: tuple[tuple[str, str], ...]  # [databases]: pool name -> its connection string
    default_pool: Pool  # the pool settings PgBouncer applies to a database listing none (the transaction pool)
    clients: int  # the client connections the app may open at once (max_client_conn's basis)
    max_client_conn: int
    query_wait_timeout: int
    reserve_pool_timeout: int
    server_login_retry: int
    server_connect_timeout: int
    server_check_delay: int
    tcp_keepalive: tuple[int, int, int]  # idle, interval, count
    ignore_startup_parameters: tuple[str, ...]
    config_path: str
    auth_file: str
    app_user: str
    app_password: Secret  # as PostgreSQL holds it (db's `held`)
    nofile: int  # LimitNOFILE
    stop_timeout: int  # TimeoutStopSec
    role_change_hook: str
    role_change_wait: int
    rollout_order: int  # 1: the leader's host (last), 0: the others

    @property
    def console(self) -> str:
        return console_command(self.socket_dir, self.port)


def console_command(socket_dir: str, port: int) -> str:
    """psql on PgBouncer's admin console, as run by the postgres OS user (`runuser -u postgres -- ...`): PgBouncer
    admits user `pgbouncer` from its own OS user on its unix socket as an administrator, without a password."""
    return f"psql -X -h {shlex.quote(socket_dir)} -p {port} -U pgbouncer -d pgbouncer"


def app_threads(inv: Inventory, source: AppSource) -> int:
    """Connections per gunicorn process: its threads (chirp holds a connection per thread)."""
    from deploykit.services.app.config import web_command, web_threads  # (app's config imports this module)

    return web_threads(web_command(inv, source))


def app_clients(inv: Inventory, threads: int) -> int:
    """The client connections the app may hold at once: app hosts x workers x threads + worker hosts x 2."""
    web = len(inv.with_role("app")) * inv.services.app.workers * threads
    return web + len(inv.with_role("worker")) * WORKER_CONNECTIONS


def context_threads(ctx: ConfigContext) -> int:
    """The app's threads per process, reading its source once per run (shared with the app's own config)."""
    from deploykit.services.app.config import app_source  # (app's config imports this module)

    inv = ctx.inv
    if not inv.with_role("app"):
        return 1  # no web process: nothing to read (a custom source need not exist then)
    return app_threads(inv, ctx.shared("app-source", lambda: app_source(inv)))


def read_threads(inv: Inventory) -> int | None:
    """The app's threads per process for a report, reading its source now; None when it cannot be read."""
    from deploykit.services.app.config import AppSourceError, app_source  # (app's config imports this module)

    if not inv.with_role("app"):
        return 1
    try:
        return app_threads(inv, app_source(inv))
    except AppSourceError:
        return None


def pools(inv: Inventory) -> tuple[Pool, Pool]:
    """The transaction pool and the session pool, as every db host runs them."""
    svc = inv.services.pooler
    timeout = f"SET statement_timeout = {svc.statement_timeout * 1000}"
    transaction = Pool(APP_DATABASE, APP_DATABASE, "transaction", svc.pool_size, svc.reserve_pool_size, timeout)
    # No reserve: a session is held until its client leaves (a LISTEN: for good), so a reserve would be taken
    # for good too. No statement_timeout: the session pool runs migrations, and its reset (DISCARD ALL) between
    # clients would drop it anyway.
    session = Pool(SESSION_DATABASE, APP_DATABASE, "session", svc.session_pool(len(inv.with_role("worker"))), 0,
                   None)
    return transaction, session


def quoted(value: str) -> str:
    """A value of a pgbouncer.ini connection string in single quotes ('' for a quote)."""
    return "'" + value.replace("'", "''") + "'"


def definition(pool: Pool, socket_dir: str, pg_port: int) -> str:
    """The pool's line in [databases]: its server connections to the local PostgreSQL, over the unix socket."""
    parts = [f"host={socket_dir}", f"port={pg_port}", f"dbname={pool.dbname}", f"pool_mode={pool.mode}",
             f"pool_size={pool.size}", f"reserve_pool={pool.reserve}"]
    if pool.connect_query:
        parts.append(f"connect_query={quoted(pool.connect_query)}")
    return " ".join(parts)


def server_connections(inv: Inventory) -> int:
    """The most server connections one pooler opens to its PostgreSQL."""
    return sum(p.size + p.reserve for p in pools(inv))


def nofile(max_client_conn: int, servers: int) -> int:
    """File descriptors: each client connection and each server connection is one (pgbouncer.ini(5))."""
    return max(NOFILE_FLOOR, max_client_conn + servers + 100)


def rollout_order(ctx: ConfigContext, host: Host) -> int:
    """1 on the host whose Patroni leads (its pooler changes last: the primary's pool restarts once, after the
    others), else 0; all 0 when nobody is known to lead (an offline plan, a first deploy)."""
    return 1 if ctx.fact(host.name, LEADER_FACT) == "200" else 0


def pooler_config(ctx: ConfigContext, host: Host) -> PoolerHostConfig:
    inv, db = ctx.inv, db_plan(ctx.placement)
    if host.name not in {m.name for m in db.members}:
        raise ValueError(f"{host.name} is not a db member: the pooler runs on the db hosts only")
    svc = inv.services.pooler
    transaction, session = pools(inv)
    clients = app_clients(inv, context_threads(ctx))
    limit = svc.client_limit(clients)
    return PoolerHostConfig(
        name=host.name,
        mesh_address=host.mesh_address,
        listen=(str(host.mesh_address), "127.0.0.1"),
        port=svc.port,
        socket_dir=SOCKET_DIR,
        pg_port=db.port,
        pools=(transaction, session),
        databases=tuple((p.name, definition(p, SOCKET_DIR, db.port)) for p in (transaction, session)),
        default_pool=transaction,
        clients=clients,
        max_client_conn=limit,
        query_wait_timeout=svc.query_wait_timeout,
        reserve_pool_timeout=RESERVE_POOL_TIMEOUT_S,
        server_login_retry=SERVER_LOGIN_RETRY_S,
        server_connect_timeout=SERVER_CONNECT_TIMEOUT_S,
        server_check_delay=SERVER_CHECK_DELAY_S,
        tcp_keepalive=(TCP_KEEPIDLE_S, TCP_KEEPINTVL_S, TCP_KEEPCNT),
        ignore_startup_parameters=IGNORED_STARTUP_PARAMETERS,
        config_path=CONFIG_PATH,
        auth_file=AUTH_FILE,
        app_user=APP_USER,
        app_password=held(ctx, APP_PASSWORD),
        nofile=nofile(limit, server_connections(inv)),
        stop_timeout=svc.statement_timeout + STOP_GRACE_S,
        role_change_hook=ROLE_CHANGE_HOOK,
        role_change_wait=ROLE_CHANGE_WAIT_S,
        rollout_order=rollout_order(ctx, host),
    )
