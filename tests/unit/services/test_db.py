"""Role db: Patroni/PostgreSQL configuration from the placement; golden files for the lab's members.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.db import SERVICE
from deploykit.services.db import state as db
from deploykit.services.db.config import DbHostConfig, db_config, primary_load_balancers
from deploykit.services.ports import mesh_addresses

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "db"
SECRETS = ("db-superuser-password", "db-replication-password", "db-app-password", "patroni-rest-password")


def context(name: str) -> ConfigContext:
    inv = load_inventory(REPO / "inventories" / name)
    return ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "s3cr3t-" + s))


LAB = context("lab.yml")
EXAMPLE = context("example.yml")


def config(ctx: ConfigContext, host: str) -> DbHostConfig:
    return db_config(ctx, ctx.inv.host(host))


def patroni_yaml(ctx: ConfigContext, host: str) -> dict:
    state = db.desired(config(ctx, host))
    return yaml.safe_load(next(f.content for f in state.files if f.path == "/etc/patroni/config.yml"))


def mesh(ctx: ConfigContext, name: str) -> str:
    """A host's mesh address (hashed from its name, inside the inventory's mesh network)."""
    return str(ctx.inv.host(name).mesh_address)


def test_patroni_config_from_placement() -> None:
    conf = patroni_yaml(LAB, "fra1-data-1")
    me = mesh(LAB, "fra1-data-1")
    assert conf["scope"] == "chirp-lab" and conf["name"] == "fra1-data-1"
    assert conf["restapi"]["listen"] == conf["restapi"]["connect_address"] == f"{me}:8008"
    assert conf["restapi"]["authentication"]["password"] == "s3cr3t-patroni-rest-password"
    assert conf["etcd3"]["hosts"] == [f"{mesh(LAB, n)}:2379" for n in ("ams1-data-1", "fra1-data-1", "rbx1-data-1")]
    pg = conf["postgresql"]
    assert pg["listen"] == f"{me},127.0.0.1:5432"  # the port once, after every address
    assert pg["connect_address"] == f"{me}:5432"
    assert pg["data_dir"] == "/var/lib/postgresql/15/chirp-lab"
    assert pg["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert pg["authentication"] == {
        "superuser": {"username": "postgres", "password": "s3cr3t-db-superuser-password"},
        "replication": {"username": "replicator", "password": "s3cr3t-db-replication-password"},
    }
    assert conf["bootstrap"]["initdb"] == [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, "data-checksums"]
    assert conf["bootstrap"]["post_bootstrap"] == "/etc/patroni/post_init.sh"
    assert conf["tags"]["nofailover"] is False


def test_dcs_settings_and_sync_from_placement() -> None:
    dcs = patroni_yaml(EXAMPLE, "fra1-db-1")["bootstrap"]["dcs"]
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (12, 2, 4)
    assert dcs["ttl"] >= dcs["loop_wait"] + 2 * dcs["retry_timeout"]
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_node_count"] == EXAMPLE.placement["db"].sync_standbys == 1
    assert dcs["maximum_lag_on_failover"] == 1048576
    assert dcs["postgresql"]["use_slots"] is True and dcs["postgresql"]["use_pg_rewind"] is True
    params = dcs["postgresql"]["parameters"]
    assert params["wal_level"] == "replica" and params["hot_standby"] == "on"
    assert params["password_encryption"] == "scram-sha-256"
    # sized from the pools, not from the 120 app hosts' 480 gunicorn processes: 20 administration + 20 + 5 reserve
    # transaction pool + 242 session pool (two for each of the 120 worker hosts: its LISTEN and the one it opens
    # again while a dead one is not closed yet; the release's lock, a spare) + 2 Patroni + 2 pgBackRest
    assert params["max_connections"] == "291"


def test_sync_standbys_follow_failure_domains(make_inventory, load_text) -> None:
    # Two of the three members share site fra1: a commit must reach two standbys.
    hosts = {
        "fra1-db-[1:2]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd]}",
        "rbx1-db-1": "{address: 10.2.0.21, site: rbx1, roles: [db, etcd]}",
    }
    inv = load_text(
        make_inventory(
            hosts=hosts,
            sites={"fra1": "{provider: hetzner}", "rbx1": "{provider: ovh}"},
            services="services:\n  db: {ttl: 20, loop_wait: 5, retry_timeout: 7}",
        )
    )
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))
    cfg = db_config(ctx, inv.host("rbx1-db-1"))
    assert cfg.dcs.synchronous_mode and cfg.dcs.synchronous_node_count == 2
    assert (cfg.dcs.ttl, cfg.dcs.loop_wait, cfg.dcs.retry_timeout) == (20, 5, 7)


def test_asynchronous_inventory(make_inventory, load_text) -> None:
    inv = load_text(make_inventory(services="services:\n  db: {synchronous: false}"))
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))
    assert db_config(ctx, inv.host("fra1-data-1")).dcs.synchronous_mode is False


def test_pg_hba_sources() -> None:
    rules = config(LAB, "ams1-data-1").pg_hba
    data = {f"{mesh(LAB, f'{s}-data-1')}/32" for s in ("fra1", "rbx1", "ams1")}
    web = {f"{mesh(LAB, f'{s}-web-{n}')}/32" for s in ("fra1", "rbx1", "ams1") for n in (1, 2)}
    by = {
        (r.type, r.database, r.user): {
            x.address for x in rules if (x.type, x.database, x.user) == (r.type, r.database, r.user)
        }
        for r in rules
    }
    assert by == {
        ("local", "all", "postgres"): {""},
        ("host", "all", "postgres"): {"127.0.0.1/32"} | data,
        # the members, and Patroni itself on this host (IDENTIFY_SYSTEM over "localhost" before following a leader)
        ("host", "replication", "replicator"): {"127.0.0.1/32"} | data,
        ("local", "chirp", "chirp"): {""},  # PgBouncer on this host, over the socket: no app host, no lb host
    }
    assert not web & {r.address for r in rules}
    assert [r.method for r in rules] == ["peer"] + ["scram-sha-256"] * (len(rules) - 1)
    example = [r for r in config(EXAMPLE, "fra1-db-1").pg_hba if r.user == "chirp"]
    assert [(r.type, r.database, r.address, r.method) for r in example] == [("local", "chirp", "", "scram-sha-256")]


def test_watchdog_off_in_the_lab_required_by_default() -> None:
    assert patroni_yaml(LAB, "fra1-data-1")["watchdog"] == {"mode": "off"}
    assert not any("watchdog" in f.path for f in db.desired(config(LAB, "fra1-data-1")).files)
    prod = db.desired(config(EXAMPLE, "fra1-db-1"))
    assert yaml.safe_load(next(f.content for f in prod.files if f.path.endswith("config.yml")))["watchdog"] == {
        "mode": "required",
        "device": "/dev/watchdog",
        "safety_margin": 5,
    }
    assert {f.path for f in prod.files} >= {
        "/etc/modules-load.d/deploykit-watchdog.conf",
        "/etc/udev/rules.d/60-deploykit-watchdog.rules",
    }


def test_secrets_never_in_repr_and_only_in_the_files_that_need_them() -> None:
    cfg = config(LAB, "fra1-data-1")
    for text in (repr(cfg), str(cfg)):
        assert "s3cr3t" not in text
        assert all(f"<secret:{name}>" in text for name in SECRETS)
    state = db.desired(cfg)
    holders = {f.path for f in state.files if "s3cr3t" in f.content}
    assert holders == {"/etc/patroni/config.yml", "/etc/patroni/post_init.sh", "/etc/patroni/roles.sql"}
    assert all(f.mode in ("0600", "0700") and f.owner == "postgres" for f in state.files if f.path in holders)
    for f in state.files:
        assert "s3cr3t" not in " ".join(filter(None, (f.validate, f.after_change)))
    assert not any("s3cr3t" in w.command for w in state.waits)


def test_the_roles_passwords_are_applied_from_a_file_on_the_leader_only() -> None:
    state = db.desired(config(LAB, "fra1-data-1"))
    roles = next(f for f in state.files if f.path == "/etc/patroni/roles.sql")
    assert [ln for ln in roles.content.splitlines() if not ln.startswith("--")] == [
        "ALTER ROLE postgres PASSWORD 's3cr3t-db-superuser-password';",
        "ALTER ROLE replicator PASSWORD 's3cr3t-db-replication-password';",
        "ALTER ROLE chirp PASSWORD 's3cr3t-db-app-password';"]
    rest = f"{LAB.inv.host('fra1-data-1').mesh_address}:8008"
    assert roles.after_change == (
        f"if curl -fsS -o /dev/null http://{rest}/primary; then runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "
        "-p 5432 -d postgres -f /etc/patroni/roles.sql; else echo 'not the leader: the leader applies "
        "/etc/patroni/roles.sql'; fi")
    # psql reads the file: the passwords are in no process's arguments; and before Patroni's reload
    paths = [f.path for f in state.files]
    assert paths.index("/etc/patroni/config.yml") < paths.index("/etc/patroni/roles.sql")


def test_the_leader_changes_first_then_the_replicas() -> None:
    def ctx_leading(leader: str | None) -> ConfigContext:
        facts = {h: {"db-leader": "200" if h == leader else "503"} for h in ("ams1-data-1", "fra1-data-1",
                                                                             "rbx1-data-1")}
        return ConfigContext(LAB.inv, LAB.placement, LAB.secret, facts=facts)

    order = {h: config(ctx_leading("rbx1-data-1"), h).rollout_order for h in ("ams1-data-1", "rbx1-data-1")}
    assert order == {"ams1-data-1": 1, "rbx1-data-1": 0}
    assert db.desired(config(ctx_leading("rbx1-data-1"), "ams1-data-1")).rollout_order == 1
    assert config(ctx_leading(None), "ams1-data-1").rollout_order == 0  # nobody leads: all at once


def test_app_role_created_from_stdin() -> None:
    state = db.desired(config(LAB, "fra1-data-1"))
    script = next(f.content for f in state.files if f.path == "/etc/patroni/post_init.sh")
    assert "<<'SQL'" in script  # quoted here-document: the password is not in any process's arguments
    assert "CREATE ROLE chirp LOGIN PASSWORD 's3cr3t-db-app-password';" in script
    assert "CREATE DATABASE chirp OWNER chirp;" in script


def test_state() -> None:
    state = db.desired(config(LAB, "fra1-data-1"))
    assert state.packages == ("postgresql-15", "patroni", "python3-etcd", "curl")
    assert state.masked == ("postgresql@15-main",)
    files = {f.path: f for f in state.files}
    assert files["/etc/patroni/config.yml"].notify == ("patroni",)
    assert "{path}" in (files["/etc/patroni/config.yml"].validate or "")
    assert "patronictl -c /etc/patroni/config.yml edit-config --force --quiet --apply /etc/patroni/dynamic.yml" in (
        files["/etc/patroni/dynamic.yml"].after_change or ""
    )
    assert files["/etc/postgresql-common/createcluster.d/60-deploykit.conf"].after_change == (
        "if [ -d /etc/postgresql/15/main ]; then pg_dropcluster --stop 15 main; fi"
    )
    # reloaded, never restarted, on a change: a restart of the primary's Patroni is a failover
    assert [(s.name, s.reload) for s in state.services] == [("patroni", True)]
    paths = [f.path for f in state.files]
    assert paths.index("/etc/patroni/config.yml") < paths.index("/etc/patroni/dynamic.yml")  # patronictl reads it
    # on the address the REST API listens on: the host's own mesh address
    health = f"curl -fsS -o /dev/null http://{mesh(LAB, 'fra1-data-1')}:8008/health"
    assert [w.command for w in state.waits][0] == health


def test_no_public_address_in_any_file() -> None:
    for host in LAB.inv.with_role("db"):
        for f in db.desired(config(LAB, host.name)).files:
            found = [h.name for h in LAB.inv.hosts if re.search(rf"\b{re.escape(str(h.address))}\b", f.content)]
            assert not found, f"{host.name}:{f.path} names the public address of {found}"


def test_firewall_opens_its_ports_on_the_mesh_to_the_members_and_load_balancers() -> None:
    rules = {r.description: r for r in SERVICE.firewall(LAB, LAB.inv.host("fra1-data-1"))}
    assert set(rules) == {"PostgreSQL", "Patroni REST API"}
    data_and_lb = mesh_addresses(LAB.inv, "db", "lb")  # HAProxy checks from the lbs' mesh addresses
    assert len(data_and_lb) == 9 and all(a in LAB.inv.mesh.network for a in data_and_lb)
    assert rules["Patroni REST API"].sources == data_and_lb
    # replication and pg_rewind between the members; clients reach PgBouncer's port (services/pooler)
    assert rules["PostgreSQL"].sources == mesh_addresses(LAB.inv, "db")
    assert {(r.port, r.interface) for r in rules.values()} == {(5432, "mesh0"), (8008, "mesh0")}


@pytest.mark.parametrize("ctx", [LAB, EXAMPLE], ids=["lab", "example"])
def test_every_internal_port_of_the_data_and_app_tiers_is_on_the_mesh_only(ctx: ConfigContext) -> None:
    """etcd, db, cache, app and worker: every rule on the mesh interface, from mesh addresses only."""
    from deploykit.services.app import APP, WORKER
    from deploykit.services.cache import SERVICE as CACHE
    from deploykit.services.etcd import SERVICE as ETCD

    seen = 0
    for service in (ETCD, SERVICE, CACHE, APP, WORKER):
        for host in ctx.inv.with_role(service.name):
            for rule in service.firewall(ctx, host):
                assert rule.interface == ctx.inv.mesh.interface == "mesh0", (service.name, host.name, rule)
                assert rule.sources and all(a in ctx.inv.mesh.network for a in rule.sources), (host.name, rule)
                seen += 1
    assert seen > 0


def test_without_load_balancers_the_app_hosts_still_reach_only_the_pooler(
    load_text, make_inventory, base_hosts  # noqa: ANN001
) -> None:
    hosts = {k: v.replace("[lb, app, worker]", "[app, worker]") for k, v in base_hosts.items()}
    inv = load_text(make_inventory(hosts=hosts))
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))
    rules = {r.description: r for r in SERVICE.firewall(ctx, inv.host("fra1-data-1"))}
    assert rules["PostgreSQL"].sources == rules["Patroni REST API"].sources == mesh_addresses(inv, "db")


def test_the_load_balancers_frontends_are_the_poolers() -> None:
    assert SERVICE.frontends(LAB.inv, "fra1") == ()  # services/pooler serves db-primary and db-replicas


def test_the_role_change_callback_runs_every_hook() -> None:
    cfg = config(LAB, "fra1-data-1")
    state = db.desired(cfg)
    assert patroni_yaml(LAB, "fra1-data-1")["postgresql"]["callbacks"] == {
        "on_role_change": "/etc/patroni/on_role_change"}
    script = next(f for f in state.files if f.path == "/etc/patroni/on_role_change")
    assert script.mode == "0755" and 'for hook in /etc/patroni/on_role_change.d/*; do' in script.content
    assert "/etc/patroni/on_role_change.d" in [d.path for d in state.directories]
    paths = [f.path for f in state.files]
    assert paths.index("/etc/patroni/on_role_change") < paths.index("/etc/patroni/config.yml")  # named there


def test_primary_load_balancers() -> None:
    assert [m.name for m in primary_load_balancers(LAB.placement, "rbx1")] == ["rbx1-web-1", "rbx1-web-2"]


def test_dynamic_file_equals_bootstrap_dcs() -> None:
    state = db.desired(config(EXAMPLE, "rbx1-db-1"))
    files = {f.path: f.content for f in state.files}
    assert (
        yaml.safe_load(files["/etc/patroni/dynamic.yml"])
        == yaml.safe_load(files["/etc/patroni/config.yml"])["bootstrap"]["dcs"]
    )


def golden_cases() -> list[tuple[str, str]]:
    return [(h.name, f.path) for h in LAB.inv.with_role("db") for f in db.desired(config(LAB, h.name)).files]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = next(f.content for f in db.desired(config(LAB, host)).files if f.path == path)
    golden = GOLDEN / f"{host}__{Path(path).name}.txt"
    matches_golden(golden, content)


def test_while_a_rotation_is_under_way_the_cluster_keeps_the_passwords_it_holds() -> None:
    """PostgreSQL takes one password per role: the roles change in the rotation's second apply, once the app
    (which tries the new password, then the previous one) has the new one."""
    def previous(name: str) -> Secret | None:
        return Secret(name, "old-" + name)

    rotating = ConfigContext(LAB.inv, LAB.placement, LAB.secret, previous=previous)
    cfg = config(rotating, "fra1-data-1")
    assert cfg.app_password.reveal() == "old-db-app-password"
    assert cfg.replication_password.reveal() == "old-db-replication-password"
    assert db.desired(cfg).files == db.desired(config(ctx_holding_old(), "fra1-data-1")).files


def ctx_holding_old() -> ConfigContext:
    """The lab before the rotation: every db secret at its old value."""
    return ConfigContext(LAB.inv, LAB.placement, lambda name: Secret(name, "old-" + name))


def test_the_role_change_callback_runs_each_executable_hook_with_patronis_arguments(tmp_path: Path) -> None:
    import subprocess

    from deploykit.services.render import render

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    out = tmp_path / "out"
    for name, body, mode in (("a-fails", "exit 3", 0o755), ("b-records", f'echo "$@" >> {out}', 0o755),
                             ("c-not-executable", f"echo no >> {out}", 0o644)):
        (hooks / name).write_text(f"#!/bin/sh\n{body}\n")
        (hooks / name).chmod(mode)
    script = tmp_path / "on_role_change"
    script.write_text(render("db/on_role_change.sh.j2", hooks=str(hooks)))
    run = subprocess.run(["/bin/sh", str(script), "on_role_change", "master", "chirp-lab"], check=False)
    assert run.returncode == 0  # Patroni is never told a hook failed
    assert out.read_text() == "on_role_change master chirp-lab\n"


def test_patroni_starts_after_the_mesh_and_the_ordering_restarts_nothing() -> None:
    """A former leader's Patroni must reach the new leader when it starts (its rewind decision): after the mesh."""
    state = db.desired(config(LAB, "fra1-data-1"))
    dropin = next(f for f in state.files if f.path == "/etc/systemd/system/patroni.service.d/deploykit.conf")
    lines = dropin.content.splitlines()
    assert "Wants=wg-quick@mesh0.service" in lines and "After=wg-quick@mesh0.service" in lines
    assert not dropin.notify and dropin.after_change is None
