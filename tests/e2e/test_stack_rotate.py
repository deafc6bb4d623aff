"""Issue 12: rotate every secret under a steady write load through the VIPs; the services keep serving, the old
passwords no longer work (asked of PostgreSQL, Redis, Sentinel and Patroni's REST API with their own clients),
and every cluster is whole afterwards.

Runs after test_stack_mesh (same lab session; reuses the applied stack).
"""

from __future__ import annotations

import time

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.secrets_store import SecretStore
from tests.e2e.conftest import LAB_INVENTORY, deploykit
from tests.e2e.test_stack_grow import DATA, Writer, check_cluster, ok
from tests.e2e.test_stack_web import VIP, https, https_url, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INV = load_inventory(LAB_INVENTORY)
PASSWORDS = ("db-app-password", "db-replication-password", "db-superuser-password", "patroni-rest-password",
             "cache-password", "haproxy-stats-password")


def values() -> dict[str, str]:
    store = SecretStore(INV, create_key=False)
    return {n: store.existing(n).reveal() for n in store.names()}


def psql(lab: Lab, host: str, user: str, password: str, dbname: str = "postgres") -> int:
    """A login on `host`'s PostgreSQL at its mesh address (pg_hba admits the superuser from the db hosts)."""
    mesh = INV.host(host).mesh_address
    r = lab.ssh(host, f"PGPASSWORD='{password}' PGCONNECT_TIMEOUT=5 psql -XAt -h {mesh} -U {user} -d {dbname} "
                      "-c 'select 1'", timeout=30)
    return r.returncode


def app_login(lab: Lab, password: str) -> int:
    """The app's own way in: from an app host, with its driver (psycopg2), through its site's HAProxy to the
    leader's PgBouncer (whose auth_file holds the password PostgreSQL holds; pg_hba admits the app role only
    from PgBouncer, over the socket)."""
    lb = INV.host("fra1-web-1")
    script = (f"import psycopg2; psycopg2.connect(host='{lb.mesh_address}', port={INV.services.lb.db_primary_port}, "
              "user='chirp', dbname='chirp', connect_timeout=5).close()")
    return lab.ssh(lb.name, f"PGPASSWORD='{password}' python3 -c \"{script}\"", timeout=30).returncode


def replication(lab: Lab, host: str, leader: str, password: str) -> int:
    """A physical replication connection from `host` to the leader as the replication role (IDENTIFY_SYSTEM)."""
    mesh = INV.host(leader).mesh_address
    r = lab.ssh(host, f"PGPASSWORD='{password}' PGCONNECT_TIMEOUT=5 psql -XAt 'host={mesh} user=replicator "
                      "replication=true' -c IDENTIFY_SYSTEM", timeout=30)
    return r.returncode


def redis_ping(lab: Lab, host: str, port: int, password: str) -> str:
    r = lab.ssh(host, f"REDISCLI_AUTH='{password}' redis-cli --no-auth-warning -h 127.0.0.1 -p {port} ping",
                timeout=30)
    return r.stdout.strip()


def patroni_auth(lab: Lab, host: str, password: str) -> str:
    """What Patroni's REST API answers a request that needs its credentials (POST /reload: re-read the config
    it already has) with these credentials: 202, or 401."""
    rest = f"{INV.host(host).mesh_address}:8008"
    return ok(lab, host, f"curl -s -o /dev/null -w '%{{http_code}}' -u 'patroni:{password}' -X POST "
                         f"http://{rest}/reload").strip()


def test_rotating_every_secret_keeps_serving_and_retires_the_old_passwords(stack: Lab, measure) -> None:  # noqa: F811
    assert https("POST", https_url(VIP["ams1"], "/api/users"), {"name": "e2e-grower"})[0] in (201, 409)
    leader, master = check_cluster(stack, DATA, DATA, DATA)
    before = values()
    assert app_login(stack, before["db-app-password"]) == 0
    with Writer("ams1") as writes:
        t0 = time.monotonic()
        r = deploykit("secrets", "rotate", str(LAB_INVENTORY), "--yes", "--no-diff", timeout=1200)
        took = time.monotonic() - t0
        time.sleep(2)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    after = values()
    rotated = sorted(n for n in before if before[n] != after.get(n))
    assert set(PASSWORDS) <= set(rotated), f"not rotated: {set(PASSWORDS) - set(rotated)}"
    assert SecretStore(INV, create_key=False).rotating() == []

    new_leader, new_master = check_cluster(stack, DATA, DATA, DATA)
    assert (new_leader, new_master) == (leader, master), "the rotation moved a leader"
    assert app_login(stack, after["db-app-password"]) == 0, "the app role with the new password"
    assert app_login(stack, before["db-app-password"]) != 0, "the app role still takes the old password"
    refused = ["chirp"]
    for host in DATA:
        assert psql(stack, host, "postgres", after["db-superuser-password"]) == 0, f"postgres on {host}"
        assert psql(stack, host, "postgres", before["db-superuser-password"]) != 0, f"old postgres on {host}"
        refused.append(f"postgres@{host}")
        for port in (6379, 26379):
            assert redis_ping(stack, host, port, after["cache-password"]) == "PONG"
            assert redis_ping(stack, host, port, before["cache-password"]) != "PONG", f"{host}:{port} takes the old"
            refused.append(f"redis:{port}@{host}")
        if host != leader:
            assert replication(stack, host, leader, after["db-replication-password"]) == 0
            assert replication(stack, host, leader, before["db-replication-password"]) != 0
            refused.append(f"replicator@{host}")
        assert patroni_auth(stack, host, before["patroni-rest-password"]) == "401"
        assert patroni_auth(stack, host, after["patroni-rest-password"]) == "202"
    lost = writes.lost()
    measure("rotate every secret under load (secrets rotate: two applies)",
            f"{len(rotated)} secrets in {took:.1f} s; {len(writes.acked)} posts acknowledged, {len(lost)} lost, "
            f"{len(writes.failed)} failed requests {sorted({c for _, c in writes.failed})}; old passwords refused "
            f"by {len(refused)} endpoints")
    assert not lost, f"acknowledged posts lost: {lost[:20]}"
    assert len(writes.acked) > 50
    assert not writes.failed, f"{len(writes.failed)} requests failed during the rotation: {writes.failed[:10]}"
