"""The pooler: PgBouncer on every db host (pools, pgbouncer.ini, firewall, load balancers' frontends, rollout,
PostgreSQL's max_connections, services.pooler's validation); golden files for the lab's db hosts.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services import SERVICES, inventory_roles, role_names
from deploykit.services.contract import ConfigContext, Rollout
from deploykit.services.db.config import hba_rules, max_connections
from deploykit.services.pooler import SERVICE
from deploykit.services.pooler import state as pooler
from deploykit.services.pooler.config import PoolerHostConfig, app_clients, pooler_config
from deploykit.services.ports import mesh_addresses

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "pooler"
INI, USERLIST = "/etc/pgbouncer/pgbouncer.ini", "/etc/pgbouncer/userlist.txt"
DROPIN = "/etc/systemd/system/pgbouncer.service.d/deploykit.conf"
HOOK = "/etc/patroni/on_role_change.d/pgbouncer-reconnect"
DATA = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def context_of(inv: Inventory, facts: dict | None = None, previous: Callable | None = None) -> ConfigContext:
    return ConfigContext(inv, plan_placement(inv), secret, facts=facts or {},
                         previous=previous or (lambda name: None))


LAB = context_of(load_inventory(REPO / "inventories" / "lab.yml"))
EXAMPLE = context_of(load_inventory(REPO / "inventories" / "example.yml"))


def config(ctx: ConfigContext, host: str) -> PoolerHostConfig:
    return pooler_config(ctx, ctx.inv.host(host))


def files(ctx: ConfigContext, host: str) -> dict[str, str]:
    return {f.path: f.content for f in pooler.desired(config(ctx, host)).files}


def ini(ctx: ConfigContext, host: str) -> dict[str, dict[str, str]]:
    """pgbouncer.ini as sections of key -> value (comments left out), as PgBouncer reads it."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in files(ctx, host)[INI].splitlines():
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        out[section][key.strip()] = value.strip()
    return out


# --- where it runs ----------------------------------------------------------------------------------------------

def test_it_runs_on_every_db_host_right_after_db_and_has_no_role_of_its_own() -> None:
    assert [h.name for h in LAB.inv.hosts if SERVICE.runs_on(h)] == list(DATA)
    assert SERVICE.role is None and SERVICE.host_role == "db"
    assert "pooler" not in inventory_roles() and "pooler" not in role_names()
    phases = [s.name for s in SERVICES]
    assert phases.index("pooler") == phases.index("db") + 1
    assert SERVICE.packages == ("pgbouncer",) and SERVICE.retire_units == ("pgbouncer",)


def test_pooler_is_not_a_role_a_host_may_have(make_inventory, base_hosts, check_text) -> None:  # noqa: ANN001
    hosts = {**base_hosts, "fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, pooler]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert any("unknown role 'pooler'" in e for e in checked.errors)


def test_a_host_that_loses_the_db_role_stops_pgbouncer() -> None:
    state = SERVICE.retire(LAB, LAB.inv.host("fra1-web-1"))
    assert state.role == "pooler" and state.retiring
    assert [(u.name, u.enabled, u.running) for u in state.services] == [("pgbouncer", False, False)]


# --- pools and limits -------------------------------------------------------------------------------------------

def test_the_pools_and_where_they_listen() -> None:
    cfg = config(LAB, "fra1-data-1")
    me = str(LAB.inv.host("fra1-data-1").mesh_address)
    assert cfg.listen == (me, "127.0.0.1") and cfg.port == 6432
    assert [(p.name, p.dbname, p.mode, p.size, p.reserve) for p in cfg.pools] == [
        ("chirp", "chirp", "transaction", 20, 5),
        ("chirp_session", "chirp", "session", 14, 0),  # 2 x 6 worker hosts (LISTEN, a re-made one) + lock + spare
    ]
    assert cfg.pools[0].connect_query == "SET statement_timeout = 5000" and cfg.pools[1].connect_query is None
    conf = ini(LAB, "fra1-data-1")
    assert conf["databases"] == {
        "chirp": "host=/var/run/postgresql port=5432 dbname=chirp pool_mode=transaction pool_size=20 "
                 "reserve_pool=5 connect_query='SET statement_timeout = 5000'",
        "chirp_session": "host=/var/run/postgresql port=5432 dbname=chirp pool_mode=session pool_size=14 "
                         "reserve_pool=0",
    }
    main = conf["pgbouncer"]
    assert (main["listen_addr"], main["listen_port"], main["unix_socket_dir"]) == (
        f"{me},127.0.0.1", "6432", "/var/run/postgresql")
    assert (main["auth_type"], main["auth_file"]) == ("scram-sha-256", USERLIST)
    assert (main["pool_mode"], main["default_pool_size"], main["max_client_conn"]) == ("transaction", "20", "1000")
    assert (main["query_wait_timeout"], main["reserve_pool_timeout"], main["server_login_retry"]) == ("10", "1", "1")
    assert main["ignore_startup_parameters"] == "extra_float_digits"
    assert "logfile" not in main and "pidfile" not in main  # the journal; systemd keeps the pid


def test_every_setting_name_is_one_pgbouncer_1_18_knows() -> None:
    """The names of pgbouncer.ini(5) for 1.18 (Debian bookworm's; its src/main.c bouncer_params): an unknown key
    stops PgBouncer from loading the file."""
    known = {"listen_addr", "listen_port", "unix_socket_dir", "auth_type", "auth_file", "pool_mode",
             "default_pool_size", "reserve_pool_size", "reserve_pool_timeout",
             "max_client_conn", "query_wait_timeout", "server_login_retry", "server_connect_timeout",
             "server_check_delay", "ignore_startup_parameters", "tcp_keepalive", "tcp_keepidle", "tcp_keepintvl",
             "tcp_keepcnt", "syslog", "log_connections", "log_disconnections", "log_pooler_errors", "log_stats",
             "stats_period"}
    assert set(ini(LAB, "fra1-data-1")["pgbouncer"]) <= known
    database_keys = {"host", "port", "dbname", "pool_mode", "pool_size", "reserve_pool", "connect_query"}
    for value in ini(LAB, "fra1-data-1")["databases"].values():
        head = value.split(" connect_query=")[0]
        assert {part.split("=")[0] for part in head.split()} | {"connect_query"} <= database_keys


def test_settings_from_the_inventory(make_inventory, load_text) -> None:  # noqa: ANN001
    inv = load_text(make_inventory(services="services:\n  pooler: {port: 7432, pool_size: 40, session_pool_size: 9, "
                                            "reserve_pool_size: 0, max_client_conn: 5000, statement_timeout: 0, "
                                            "query_wait_timeout: 3}"))
    ctx = context_of(inv)
    conf = ini(ctx, "fra1-data-1")
    assert conf["databases"]["chirp"] == ("host=/var/run/postgresql port=5432 dbname=chirp pool_mode=transaction "
                                          "pool_size=40 reserve_pool=0 connect_query='SET statement_timeout = 0'")
    assert "pool_size=9 " in conf["databases"]["chirp_session"] + " "
    assert (conf["pgbouncer"]["listen_port"], conf["pgbouncer"]["max_client_conn"],
            conf["pgbouncer"]["query_wait_timeout"]) == ("7432", "5000", "3")
    assert max_connections(inv) == 100  # 20 + 40 + 9 + 2 + 2: the floor


def test_max_client_conn_is_computed_from_the_app_with_a_margin() -> None:
    # lab: 6 app hosts x 2 gunicorn workers x 4 threads (chirp's Procfile) + 6 worker hosts x 2
    assert app_clients(LAB.inv, 4) == 60 and config(LAB, "fra1-data-1").clients == 60
    assert config(LAB, "fra1-data-1").max_client_conn == 1000  # twice that, at least 1000
    # example: 120 app hosts x 4 workers x 4 threads + 120 worker hosts x 2 = 2160, doubled
    cfg = config(EXAMPLE, "fra1-db-1")
    assert (cfg.clients, cfg.max_client_conn) == (2160, 4320)
    assert cfg.nofile == 65536  # a descriptor per connection fits under the floor


def test_a_very_large_max_client_conn_raises_the_file_limit(make_inventory, load_text) -> None:  # noqa: ANN001
    inv = load_text(make_inventory(services="services:\n  pooler: {max_client_conn: 100000}"))
    cfg = config(context_of(inv), "fra1-data-1")
    assert cfg.nofile == 100000 + 20 + 5 + 14 + 100  # clients, both pools (reserve included), a margin
    assert f"LimitNOFILE={cfg.nofile}\n" in files(context_of(inv), "fra1-data-1")[DROPIN]


def test_without_app_hosts_nothing_reads_the_app_source(make_inventory, base_hosts, load_text) -> None:  # noqa: ANN001
    hosts = {k: v for k, v in base_hosts.items() if "data" in k}
    inv = load_text(make_inventory(hosts=hosts, services="services:\n  app: {source: ./missing}"))
    assert config(context_of(inv), "fra1-data-1").clients == 0


# --- max_connections ---------------------------------------------------------------------------------------------

def test_max_connections_follows_the_pools_not_the_app_processes(make_inventory, load_text) -> None:  # noqa: ANN001
    assert max_connections(LAB.inv) == 100  # 20 + 20 + 5 + 14 + 2 + 2 = 63: the floor
    # the example's 120 app hosts with 4 workers each used to need 740; now the pools do: 20 + 25 + 242 + 4
    assert max_connections(EXAMPLE.inv) == 291
    big = load_text(make_inventory(services="services:\n  pooler: {pool_size: 200, reserve_pool_size: 20}"))
    assert max_connections(big) == 20 + 200 + 20 + 14 + 2 + 2


# --- authentication ----------------------------------------------------------------------------------------------

def test_the_auth_file_holds_the_apps_password_and_only_it_holds_a_secret() -> None:
    state = pooler.desired(config(LAB, "fra1-data-1"))
    by_path = {f.path: f for f in state.files}
    assert by_path[USERLIST].content == '"chirp" "s3cr3t-db-app-password"\n'
    assert (by_path[USERLIST].mode, by_path[USERLIST].owner, by_path[USERLIST].group) == ("0640", "postgres",
                                                                                        "postgres")
    assert [f.path for f in state.files if "s3cr3t" in f.content] == [USERLIST]
    assert "s3cr3t" not in repr(config(LAB, "fra1-data-1"))
    assert not any("s3cr3t" in w.command for w in state.waits)


def test_a_quote_in_the_password_is_doubled() -> None:
    assert pooler.userlist_field('a"b') == '"a""b"'


def test_during_a_rotation_it_keeps_the_password_postgresql_holds() -> None:
    old = Secret("db-app-password", "old-one")
    ctx = context_of(LAB.inv, previous=lambda name: old if name == "db-app-password" else None)
    assert config(ctx, "fra1-data-1").app_password == old
    assert files(ctx, "fra1-data-1")[USERLIST] == '"chirp" "old-one"\n'


def test_postgresql_admits_the_app_only_from_pgbouncer_on_its_socket() -> None:
    app_rules = [r for r in hba_rules(LAB.inv) if r.user == "chirp"]
    assert [(r.type, r.database, r.address, r.method) for r in app_rules] == [
        ("local", "chirp", "", "scram-sha-256")]


# --- network ---------------------------------------------------------------------------------------------------

def test_its_port_is_open_on_the_mesh_to_the_load_balancers_only() -> None:
    (rule,) = SERVICE.firewall(LAB, LAB.inv.host("fra1-data-1"))
    assert (rule.description, rule.protocol, rule.port, rule.interface) == ("PgBouncer", "tcp", 6432, "mesh0")
    assert rule.sources == mesh_addresses(LAB.inv, "lb")
    (rule,) = SERVICE.firewall(EXAMPLE, EXAMPLE.inv.host("fra1-db-1"))
    assert rule.sources == mesh_addresses(EXAMPLE.inv, "lb") and len(rule.sources) == 6  # not the 120 app hosts


def test_without_load_balancers_the_app_and_worker_hosts_connect_directly(make_inventory, base_hosts,
                                                                         load_text) -> None:  # noqa: ANN001
    hosts = {k: v.replace("[lb, app, worker]", "[app, worker]") for k, v in base_hosts.items()}
    ctx = context_of(load_text(make_inventory(hosts=hosts)))
    (rule,) = SERVICE.firewall(ctx, ctx.inv.host("fra1-data-1"))
    assert rule.sources == mesh_addresses(ctx.inv, "app", "worker")


def test_the_load_balancers_reach_each_members_pooler_and_ask_patroni_who_leads() -> None:
    frontends = SERVICE.frontends(LAB.inv, "fra1")
    assert [(f.name, f.port, f.mode, f.check, f.check_path, f.clients, f.label) for f in frontends] == [
        ("db-primary", 5000, "tcp", "GET /primary on :8008", "/primary", ("app", "worker"), "PostgreSQL primary"),
        ("db-replicas", 5001, "tcp", "GET /replica on :8008", "/replica", ("app", "worker"), "PostgreSQL replicas"),
    ]
    for f in frontends:
        assert [(b.name, b.address, b.port, b.check_port, b.backup) for b in f.backends] == [
            (h.name, h.mesh_address, 6432, 8008, False) for h in LAB.inv.with_role("db")]


def test_no_db_hosts_no_frontends(make_inventory, base_hosts, load_text) -> None:  # noqa: ANN001
    hosts = {k: v.replace("[db, etcd, cache]", "[etcd, cache]") for k, v in base_hosts.items()}
    inv = load_text(make_inventory(hosts=hosts))
    assert SERVICE.frontends(inv, "fra1") == ()
    assert SERVICE.describe(inv, plan_placement(inv)) == ()


# --- state and rollout ---------------------------------------------------------------------------------------------

def test_a_change_is_reloaded_and_one_of_what_pgbouncer_reads_at_start_restarts_it() -> None:
    state = pooler.desired(config(LAB, "fra1-data-1"))
    by_path = {f.path: f for f in state.files}
    assert state.packages == ("pgbouncer",)
    assert [(u.name, u.enabled, u.running, u.reload) for u in state.services] == [("pgbouncer", True, True, True)]
    assert by_path[INI].notify == by_path[USERLIST].notify == ("pgbouncer",)
    assert (by_path[INI].mode, by_path[INI].owner) == ("0640", "postgres")
    # the drop-in names what PgBouncer reads only at start: a listen change changes it, and that restarts
    dropin = by_path[DROPIN]
    assert dropin.notify == () and dropin.after_change == (
        "systemctl daemon-reload && systemctl try-restart pgbouncer.service")
    me = LAB.inv.host("fra1-data-1").mesh_address
    assert f"listen_addr = {me},127.0.0.1, listen_port = 6432, unix_socket_dir = /var/run/postgresql" in \
        dropin.content
    assert "LimitNOFILE=65536\n" in dropin.content and "TimeoutStopSec=15\n" in dropin.content
    assert "Restart=on-failure\n" in dropin.content


def test_a_listen_change_changes_the_drop_in(make_inventory, load_text) -> None:  # noqa: ANN001
    before = files(context_of(load_text(make_inventory())), "fra1-data-1")
    after = files(context_of(load_text(make_inventory(services="services:\n  pooler: {port: 7432}"))),
                  "fra1-data-1")
    assert before[DROPIN] != after[DROPIN] and before[INI] != after[INI]
    timeout = files(context_of(load_text(make_inventory(services="services:\n  pooler: {query_wait_timeout: 30}"))),
                    "fra1-data-1")
    assert timeout[DROPIN] == before[DROPIN] and timeout[INI] != before[INI]  # a reload is enough


def test_it_waits_for_pgbouncer_on_the_mesh_and_on_its_console() -> None:
    (wait,) = pooler.desired(config(LAB, "fra1-data-1")).waits
    me = LAB.inv.host("fra1-data-1").mesh_address
    assert wait.command == (
        f"pg_isready -q -h {me} -p 6432 -d chirp -U chirp && runuser -u postgres -- psql -X -h /var/run/postgresql "
        "-p 6432 -U pgbouncer -d pgbouncer -Atq -c 'SHOW VERSION' >/dev/null")


def test_the_console_needs_the_postgres_os_user_only() -> None:
    cfg = config(LAB, "fra1-data-1")
    assert cfg.console == "psql -X -h /var/run/postgresql -p 6432 -U pgbouncer -d pgbouncer"
    main = ini(LAB, "fra1-data-1")["pgbouncer"]
    assert "admin_users" not in main and "stats_users" not in main  # nobody logs in as an administrator
    assert f"runuser -u postgres -- {cfg.console}" in files(LAB, "fra1-data-1")[INI]


def test_one_host_at_a_time_the_leaders_last() -> None:
    assert SERVICE.rollout is Rollout.ONE_AT_A_TIME and SERVICE.reads_facts == ("db-leader",)
    facts = {h: {"db-leader": "200" if h == "rbx1-data-1" else "503"} for h in DATA}
    ctx = context_of(LAB.inv, facts=facts)
    assert {h: config(ctx, h).rollout_order for h in DATA} == {"ams1-data-1": 0, "fra1-data-1": 0,
                                                               "rbx1-data-1": 1}
    assert pooler.desired(config(ctx, "rbx1-data-1")).rollout_order == 1
    assert {config(LAB, h).rollout_order for h in DATA} == {0}  # nobody known to lead: by name


# --- Patroni's role-change hook ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "answer"), [("master", "f"), ("replica", "t")])
def test_the_role_change_hook_waits_for_the_new_role_then_resets_the_pools(tmp_path: Path, role: str,
                                                                           answer: str) -> None:
    log = tmp_path / "psql.log"
    fake = tmp_path / "psql"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *pg_is_in_recovery*) echo {answer} ;; esac\n')
    fake.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(files(LAB, "fra1-data-1")[HOOK])
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    run = subprocess.run(["/bin/sh", str(hook), "on_role_change", role, "chirp-lab"], env=env, timeout=10,
                         check=False)
    assert run.returncode == 0
    assert log.read_text().splitlines() == [
        "-XAtq -h /var/run/postgresql -p 5432 -d postgres -c select pg_is_in_recovery()",
        "-X -h /var/run/postgresql -p 6432 -U pgbouncer -d pgbouncer -q -c RECONNECT",
    ]


def test_the_hook_is_where_dbs_callback_runs_it() -> None:
    hook = next(f for f in pooler.desired(config(LAB, "fra1-data-1")).files if f.path == HOOK)
    assert hook.mode == "0755" and hook.content.startswith("#!/bin/sh\n")


# --- the offline plan -----------------------------------------------------------------------------------------------

def test_describe_says_where_the_pools_run_and_their_sizes() -> None:
    (section,) = SERVICE.describe(LAB.inv, LAB.placement)
    assert section.title == ("Connection pools (PgBouncer on ams1-data-1, fra1-data-1, rbx1-data-1, port 6432; "
                             "per db host)")
    rows = {r[0]: r[1:] for r in section.rows}
    assert rows["chirp"][0] == "transaction, 20 (+5 reserve)"
    assert rows["chirp_session"][0] == "session, 14"
    assert rows["clients"][0] == "at most 1000" and "about 60" in rows["clients"][1]
    assert rows["PostgreSQL"][0] == "max_connections 100"


# --- validation ------------------------------------------------------------------------------------------------------

F = "inventory.yml"


@pytest.mark.parametrize(("setting", "message"), [
    ("pool_size: 0", "services/pooler/pool_size: input should be greater than or equal to 1, got the number 0"),
    ("reserve_pool_size: -1",
     "services/pooler/reserve_pool_size: input should be greater than or equal to 0, got the number -1"),
    ("statement_timeout: -5",
     "services/pooler/statement_timeout: input should be greater than or equal to 0, got the number -5"),
    ("max_client_conn: 5",
     "services/pooler/max_client_conn: input should be greater than or equal to 10, got the number 5"),
    ("port: 70000", "services/pooler/port: input should be less than or equal to 65535, got the number 70000"),
    ("pool_size: '20'", "services/pooler/pool_size: expected a whole number, got the text '20'"),
    ("pool: 20", "services/pooler/pool: unknown key 'pool' (did you mean 'pool_size'?)"),
])
def test_out_of_range_settings_are_errors_naming_the_line_and_key(setting: str, message: str, make_inventory,
                                                                   check_text) -> None:  # noqa: ANN001
    checked = check_text(make_inventory(services=f"services:\n  pooler:\n    {setting}"))
    assert checked.only_error() == f"{F}:18: {message}"


def test_a_query_wait_timeout_of_zero_would_queue_forever(make_inventory, check_text) -> None:  # noqa: ANN001
    checked = check_text(make_inventory(services="services:\n  pooler: {query_wait_timeout: 0}"))
    assert checked.only_error() == (
        f"{F}:17: services/pooler/query_wait_timeout: write the seconds a client may wait for a server connection, "
        "1 to 3600 (PgBouncer reads 0 as 'wait forever': a busy pool would then hold every client), got the number 0")


def test_a_session_pool_too_small_for_the_workers_is_an_error(make_inventory, check_text) -> None:  # noqa: ANN001
    checked = check_text(make_inventory(services="services:\n  pooler:\n    session_pool_size: 4"))
    assert checked.only_error() == (
        f"{F}:18: services/pooler/session_pool_size: 4 session connections cannot hold the LISTEN of the 6 worker "
        "hosts and the release's migration lock: write at least 7, or leave it out (then 14)")


def test_a_max_client_conn_below_what_the_app_opens_is_an_error(make_inventory, check_text) -> None:  # noqa: ANN001
    checked = check_text(make_inventory(services="services:\n  pooler:\n    max_client_conn: 20"))
    assert checked.only_error() == (
        f"{F}:18: services/pooler/max_client_conn: 20 client connections are fewer than the 25 the app opens at "
        "least (6 app hosts x 2 gunicorn workers, 6 worker hosts x 2, the release): write more, or leave it out "
        "(then computed from the app)")


def test_its_port_must_not_be_one_of_the_db_hosts_other_ports(make_inventory, check_text) -> None:  # noqa: ANN001
    checked = check_text(make_inventory(services="services:\n  pooler:\n    port: 8008"))
    assert checked.only_error() == (
        f"{F}:18: services/pooler/port: port 8008 of pooler.port is also db.patroni_port on host 'fra1-data-1' "
        "(roles db, etcd, cache); pick another port")


def test_defaults(make_inventory, load_text) -> None:  # noqa: ANN001
    svc = load_text(make_inventory()).services.pooler
    assert (svc.port, svc.pool_size, svc.session_pool_size, svc.reserve_pool_size, svc.max_client_conn,
            svc.statement_timeout, svc.query_wait_timeout) == (6432, 20, None, 5, None, 5, 10)
    assert svc.session_pool(0) == svc.session_pool(1) == 5 and svc.session_pool(3) == 8 and svc.session_pool(10) == 22
    assert svc.client_limit(10) == 1000 and svc.client_limit(700) == 1400


# --- golden files ---------------------------------------------------------------------------------------------------

def golden_cases() -> list[tuple[str, str]]:
    return [(h, f.path) for h in DATA for f in pooler.desired(config(LAB, h)).files]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:  # noqa: ANN001
    content = files(LAB, host)[path]
    matches_golden(GOLDEN / f"{host}__{Path(path).name}.txt", content)


def test_the_online_plan_names_a_max_client_conn_below_the_apps_threads(make_inventory, load_text) -> None:  # noqa: ANN001
    # 6 app hosts x 2 workers x 4 threads + 6 worker hosts x 2 = 60: validation only knows of 25 at least
    inv = load_text(make_inventory(services="services:\n  pooler: {max_client_conn: 40}"))
    ctx = context_of(inv)
    assert SERVICE.check(ctx, inv.host("fra1-data-1")) == (
        "max_client_conn 40 is below the 60 connections the app may open at once (a connection per gunicorn "
        "thread): clients beyond it are refused; raise services.pooler.max_client_conn or leave it out",)
    assert SERVICE.check(LAB, LAB.inv.host("fra1-data-1")) == ()
