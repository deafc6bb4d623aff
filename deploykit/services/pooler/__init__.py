"""pooler: PgBouncer (Debian's pgbouncer 1.18) on every db host, between the app and PostgreSQL.

The app and the workers connect to the pooler of the primary (through the load balancers' db-primary frontend,
or without load balancers to every member's, libpq picking the read-write one), which holds a bounded number
of connections to its own PostgreSQL: PostgreSQL's max_connections follows the pools (db's max_connections),
not the number of app processes. It has no inventory role: it runs on the hosts of the db role (`host_role`),
and stops on a host that loses it (`retire_units`). Phase: right after db (its PostgreSQL and its role-change
hook directory exist).
"""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.services.contract import (
    Backend,
    ConfigContext,
    FirewallRule,
    Frontend,
    Rollout,
    Section,
    Service,
    listed,
)
from deploykit.services.db.config import LEADER_FACT, max_connections, primary_load_balancers
from deploykit.services.db.placement import db_plan
from deploykit.services.pooler.config import (
    HOST_ROLE,
    NAME,
    PoolerHostConfig,
    app_clients,
    pooler_config,
    pools,
    read_threads,
)
from deploykit.services.pooler.state import PACKAGES, UNIT, desired
from deploykit.services.ports import mesh_addresses

# The load balancers' frontends for the primary and the replicas: each member's pooler, checked on Patroni's
# REST API (who is primary is Patroni's to say; the pooler forwards to its own member).
PRIMARY, REPLICAS = "db-primary", "db-replicas"
CHECK_PATHS = {PRIMARY: "/primary", REPLICAS: "/replica"}
LABELS = {PRIMARY: "PostgreSQL primary", REPLICAS: "PostgreSQL replicas"}


class Pooler(Service):
    name = NAME
    host_role = HOST_ROLE
    # Each restart drops its clients: one host after the other, the primary's last (rollout_order).
    rollout = Rollout.ONE_AT_A_TIME
    packages = PACKAGES
    retire_units = (UNIT,)
    reads_facts = (LEADER_FACT,)

    # No tier rule: the pooler lives and dies with its db host, and losing the host is judged by db's rule,
    # which counts the members; a rule here could only say the same. (A PgBouncer that crashed on a live member
    # is not a host loss: systemd restarts it, see the unit's drop-in. The load balancers ask Patroni, not
    # PgBouncer, who is primary, so they do not route around it meanwhile.)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        members = db_plan(placement).members
        if not members:
            return ()
        svc = inv.services.pooler
        transaction, session = pools(inv)
        threads = read_threads(inv)
        how = "" if threads is not None else " (counting one thread per process: the app's source cannot be read)"
        clients = app_clients(inv, threads or 1)
        where = listed([m.name for m in members])
        rows = (
            (transaction.name, f"transaction, {transaction.size} (+{transaction.reserve} reserve)",
             f"the app's and the workers' queries; statement_timeout {svc.statement_timeout} s, a client waits "
             f"at most {svc.query_wait_timeout} s"),
            (session.name, f"session, {session.size}",
             "the migrations' advisory lock, each worker host's LISTEN"),
            ("clients", f"at most {svc.client_limit(clients)}",
             f"the app opens about {clients}{how}; through the load balancers all reach the primary's"),
            ("PostgreSQL", f"max_connections {max_connections(inv)}", "the pools, administration, Patroni, pgBackRest"),
        )
        return (Section(f"Connection pools (PgBouncer on {where}, port {svc.port}; per db host)",
                        ("pool", "mode, server connections", "for"), rows),)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        # HAProxy proxies in TCP mode: connections arrive from the lb hosts' mesh addresses. Without any load
        # balancer the app and the workers connect directly (app's db_endpoint).
        inv = ctx.inv
        direct = not primary_load_balancers(ctx.placement, host.site)  # the same for every site
        clients = ("lb", "app", "worker") if direct else ("lb",)
        return (FirewallRule("PgBouncer", "tcp", inv.services.pooler.port, mesh_addresses(inv, *clients),
                             inv.mesh.interface),)

    def frontends(self, inv: Inventory, site: str) -> tuple[Frontend, ...]:
        dbs, db, lb = inv.with_role(HOST_ROLE), inv.services.db, inv.services.lb
        if not dbs:
            return ()
        port = inv.services.pooler.port
        out = []
        for name, listen in ((PRIMARY, lb.db_primary_port), (REPLICAS, lb.db_replica_port)):
            path = CHECK_PATHS[name]
            backends = tuple(Backend(h.name, h.mesh_address, port, False, db.patroni_port) for h in dbs)
            out.append(Frontend(name, listen, "tcp", f"GET {path} on :{db.patroni_port}", backends,
                                check_kind="http", check_path=path, clients=("app", "worker"),
                                label=LABELS[name]))
        return tuple(out)

    def check(self, ctx: ConfigContext, host: Host) -> tuple[str, ...]:
        # Validation checks services.pooler.max_client_conn against one connection per gunicorn process; the
        # threads per process are known only from the app's source, read here.
        cfg = pooler_config(ctx, host)
        if cfg.max_client_conn >= cfg.clients:
            return ()
        return (f"max_client_conn {cfg.max_client_conn} is below the {cfg.clients} connections the app may open at "
                "once (a connection per gunicorn thread): clients beyond it are refused; raise "
                "services.pooler.max_client_conn or leave it out",)

    def config(self, ctx: ConfigContext, host: Host) -> PoolerHostConfig:
        return pooler_config(ctx, host)

    def desired(self, cfg: PoolerHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Pooler()
