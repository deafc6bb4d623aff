"""Role cache: Redis + Sentinel per-host config (initial master, quorum, secrets) and the rendered state.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import ManagedFile, RoleState, Unit
from deploykit.secret import Secret
from deploykit.services.cache import SERVICE
from deploykit.services.cache import state as cache
from deploykit.services.cache.config import CacheHostConfig, cache_config
from deploykit.services.cache.sentinel import (
    ACL_FILE,
    AUTH_CONF,
    LOGIN,
    PREVIOUS_AUTH,
    SETTINGS_FILE,
    failover_script,
    sync_script,
)
from deploykit.services.contract import ConfigContext
from deploykit.services.ports import mesh_addresses

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "cache"
CACHE_HOSTS = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def context_of(inv: Inventory, secrets=secret) -> ConfigContext:  # noqa: ANN001
    return ConfigContext(inv, plan_placement(inv), secrets)


LAB = context_of(load_inventory(REPO / "inventories" / "lab.yml"))


def lab(host: str) -> CacheHostConfig:
    return cache_config(LAB, LAB.inv.host(host))


def mesh(host: str) -> str:
    """A lab host's mesh address (hashed from its name, inside the lab's mesh network 10.77.128.0/17)."""
    return str(LAB.inv.host(host).mesh_address)


def state(host: str) -> RoleState:
    return cache.desired(lab(host))


def file(st: RoleState, path: str) -> ManagedFile:
    return next(f for f in st.files if f.path == path)


def lines(st: RoleState, path: str) -> list[str]:
    return [ln for ln in file(st, path).content.splitlines() if ln and not ln.startswith("#")]


# --- config ------------------------------------------------------------------------------------------------


def test_lab_config() -> None:
    cfg = lab("fra1-data-1")
    assert cfg.master_name == "chirp-lab"
    assert str(cfg.master_address) == mesh("ams1-data-1")  # first cache host by name, on the mesh
    assert cfg.mesh_address == LAB.inv.host("fra1-data-1").mesh_address
    assert not cfg.is_master and not cfg.master_running  # no sentinel reported: the placement's first
    assert (cfg.port, cfg.sentinel_port, cfg.quorum, cfg.down_after_ms) == (6379, 26379, 2, 3000)
    assert cfg.failover_timeout_ms == 30000
    assert cfg.parallel_syncs == 1
    assert cfg.password == secret("cache-password")


def test_only_the_initial_master_has_no_replicaof() -> None:
    by_host = {h: lab(h).replicaof for h in CACHE_HOSTS}
    assert by_host == {
        "ams1-data-1": None,
        "fra1-data-1": lab("ams1-data-1").mesh_address,
        "rbx1-data-1": lab("ams1-data-1").mesh_address,
    }
    assert [ln for ln in lines(state("ams1-data-1"), cache.REDIS_CONF) if ln.startswith("replicaof")] == []
    for host in ("fra1-data-1", "rbx1-data-1"):
        assert [ln for ln in lines(state(host), cache.REDIS_CONF) if ln.startswith("replicaof")] == [
            f"replicaof {mesh('ams1-data-1')} 6379"
        ]


def test_sentinel_monitors_the_initial_master_with_a_majority_quorum() -> None:
    for host in CACHE_HOSTS:
        assert f"sentinel monitor chirp-lab {mesh('ams1-data-1')} 6379 2" in lines(state(host), cache.SENTINEL_CONF)


@pytest.mark.parametrize(("count", "quorum"), [(1, 1), (3, 2), (4, 3), (5, 3)])
def test_quorum_is_a_majority(load_text, make_inventory, count: int, quorum: int) -> None:  # noqa: ANN001
    hosts = {
        f"c-[1:{count}]": "{address: 10.1.0.31, site: fra1, roles: [cache]}",
        "e-1": "{address: 10.1.0.21, site: fra1, roles: [etcd]}",
    }
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner}"}, failure_domains="[host]"))
    ctx = context_of(inv)
    cfgs = [cache_config(ctx, h) for h in inv.with_role("cache")]
    assert {c.quorum for c in cfgs} == {quorum}
    assert [c.is_master for c in cfgs] == [True] + [False] * (count - 1)
    master = inv.host("c-1").mesh_address
    assert f"sentinel monitor chirp-test {master} 6379 {quorum}" in lines(cache.desired(cfgs[-1]), cache.SENTINEL_CONF)


def test_services_tunables_reach_the_files(load_text, make_inventory) -> None:  # noqa: ANN001
    services = "services:\n  cache: {port: 7000, sentinel_port: 27000, down_after_ms: 500}\n"
    inv = load_text(make_inventory(services=services))
    cfg = cache_config(context_of(inv), inv.host("rbx1-data-1"))
    st = cache.desired(cfg)
    assert cfg.failover_timeout_ms == 10_000  # never below the floor
    assert "port 7000" in lines(st, cache.STATIC_CONF)
    assert f"replicaof {inv.host('ams1-data-1').mesh_address} 7000" in lines(st, cache.REDIS_CONF)
    sentinel = lines(st, cache.SENTINEL_CONF)
    assert "port 27000" in sentinel
    assert "sentinel down-after-milliseconds chirp-test 500" in sentinel
    assert "sentinel failover-timeout chirp-test 10000" in sentinel


def test_no_public_address_in_any_file() -> None:
    for host in CACHE_HOSTS:
        for f in state(host).files:
            found = [h.name for h in LAB.inv.hosts if re.search(rf"\b{re.escape(str(h.address))}\b", f.content)]
            assert not found, f"{host}:{f.path} names the public address of {found}"


def test_firewall_opens_redis_and_sentinel_on_the_mesh_to_their_clients() -> None:
    rules = SERVICE.firewall(LAB, LAB.inv.host("fra1-data-1"))
    assert [(r.description, r.port, r.interface) for r in rules] == [
        ("Redis", 6379, "mesh0"),
        ("Redis Sentinel", 26379, "mesh0"),
    ]
    # replicas and sentinels, the app and worker (through Sentinel) and HAProxy's checks: every lab host
    clients = mesh_addresses(LAB.inv, "cache", "app", "worker", "lb")
    assert clients == tuple(h.mesh_address for h in LAB.inv.hosts)
    assert all(r.sources == clients for r in rules)


def test_load_balancers_check_the_servers_on_their_mesh_addresses() -> None:
    (frontend,) = SERVICE.frontends(LAB.inv, "fra1")
    assert [(b.name, b.address, b.port) for b in frontend.backends] == [
        (h, LAB.inv.host(h).mesh_address, 6379) for h in CACHE_HOSTS
    ]


def test_a_host_without_the_role_is_refused() -> None:
    with pytest.raises(ValueError, match="not a cache member"):
        cache_config(LAB, LAB.inv.host("fra1-web-1"))


# --- rendered state ----------------------------------------------------------------------------------------


def test_static_settings() -> None:
    static = lines(state("rbx1-data-1"), cache.STATIC_CONF)
    for want in (
        f"bind {mesh('rbx1-data-1')} 127.0.0.1",
        "port 6379",
        "protected-mode yes",
        "appendonly yes",
        "include /etc/redis/deploykit-auth.conf",
        f"replica-announce-ip {mesh('rbx1-data-1')}",
    ):
        assert want in static
    assert not any(ln.startswith(("replicaof", "sentinel", "requirepass", "masterauth")) for ln in static)


def test_passwords_reach_the_acl_as_hashes_and_masterauth() -> None:
    pw_hash = hashlib.sha256(b"s3cr3t-cache-password").hexdigest()
    st = state("rbx1-data-1")
    assert lines(st, AUTH_CONF) == ["aclfile /etc/redis/deploykit-users.acl", "masterauth s3cr3t-cache-password"]
    assert file(st, ACL_FILE).content == f"user default on #{pw_hash} ~* &* +@all\n"
    assert (file(st, ACL_FILE).mode, file(st, ACL_FILE).group) == ("0640", "redis")
    # the hashes are in the included file too (a comment), so that its change applies them at run time
    assert f"# accepted: {pw_hash}" in file(st, AUTH_CONF).content
    # never a `user` line in a file Redis includes: CONFIG REWRITE would copy it into redis.conf, and Redis
    # refuses to start with a user defined twice (seen on the lab after a failover and a restart)
    assert not any(ln.startswith("user ") for f in (AUTH_CONF, cache.STATIC_CONF) for ln in lines(st, f))


def test_while_a_rotation_is_under_way_both_passwords_are_accepted_and_the_previous_one_used() -> None:
    def previous(name: str) -> Secret | None:
        return Secret(name, "old-" + name) if name == "cache-password" else None

    ctx = ConfigContext(LAB.inv, LAB.placement, secret, previous=previous)
    cfg = cache_config(ctx, LAB.inv.host("rbx1-data-1"))
    new, old = (hashlib.sha256(p.encode()).hexdigest() for p in ("s3cr3t-cache-password", "old-cache-password"))
    assert cfg.password_hashes == (new, old)
    st = cache.desired(cfg)
    assert lines(st, AUTH_CONF) == ["aclfile /etc/redis/deploykit-users.acl", "masterauth old-cache-password"]
    assert file(st, ACL_FILE).content == f"user default on #{new} #{old} ~* &* +@all\n"
    assert f"user default on #{new} #{old} ~* &* +@all" in lines(st, cache.SENTINEL_CONF)
    assert "sentinel auth-pass chirp-lab old-cache-password" in lines(st, cache.SENTINEL_CONF)
    assert file(st, PREVIOUS_AUTH).content == "old-cache-password\n"
    assert file(st, cache.CLI_AUTH).content == "s3cr3t-cache-password\n"  # the waits and clients: the new one
    assert f"passwords {new} {old}" in lines(st, SETTINGS_FILE)
    settings = file(st, SETTINGS_FILE).after_change or ""
    assert f"printf '%s' \"$(cat {PREVIOUS_AUTH})\" | {LOGIN} 26379 -x sentinel set chirp-lab auth-pass" in settings
    assert file(state("rbx1-data-1"), PREVIOUS_AUTH).content == ""  # none outside a rotation


def test_sentinel_settings() -> None:
    sentinel = lines(state("rbx1-data-1"), cache.SENTINEL_CONF)
    for want in (
        "port 26379",
        f"bind {mesh('rbx1-data-1')} 127.0.0.1",
        f"user default on #{hashlib.sha256(b's3cr3t-cache-password').hexdigest()} ~* &* +@all",
        "sentinel sentinel-pass s3cr3t-cache-password",
        f"sentinel announce-ip {mesh('rbx1-data-1')}",
        "sentinel auth-pass chirp-lab s3cr3t-cache-password",
        "sentinel parallel-syncs chirp-lab 1",
        "sentinel deny-scripts-reconfig yes",
    ):
        assert want in sentinel
    # The monitor line comes before the lines that name the master (Sentinel refuses them otherwise).
    monitor = next(i for i, ln in enumerate(sentinel) if ln.startswith("sentinel monitor"))
    assert all(i > monitor for i, ln in enumerate(sentinel) if " chirp-lab " in ln and i != monitor)


def test_runtime_rewritten_files_are_seeds_the_rest_managed() -> None:
    st = state("fra1-data-1")
    assert {f.path: f.seed for f in st.files} == {
        cache.REDIS_CONF: True,
        cache.SENTINEL_CONF: True,
        cache.STATIC_CONF: False,
        cache.CLI_AUTH: False,
        SETTINGS_FILE: False,
        AUTH_CONF: False,
        ACL_FILE: False,
        PREVIOUS_AUTH: False,
        LOGIN: False,
    }
    for path in (cache.REDIS_CONF, cache.SENTINEL_CONF):
        f = file(st, path)
        assert (f.owner, f.group, f.mode) == ("redis", "redis", "0640")
    assert (file(st, cache.CLI_AUTH).owner, file(st, cache.CLI_AUTH).mode) == ("root", "0600")
    assert file(st, cache.STATIC_CONF).group == "redis"
    assert file(st, cache.STATIC_CONF).mode == "0640"


def test_redis_conf_includes_the_static_file() -> None:
    assert lines(state("ams1-data-1"), cache.REDIS_CONF) == [f"include {cache.STATIC_CONF}"]


def test_notify_and_after_change() -> None:
    st = state("fra1-data-1")
    assert file(st, cache.REDIS_CONF).notify == ("redis-server",)
    assert file(st, cache.STATIC_CONF).notify == ("redis-server",)
    assert file(st, cache.SENTINEL_CONF).notify == ("redis-sentinel",)
    restart = file(st, cache.STATIC_CONF).after_change
    assert restart == (f"(\n{failover_script(6379, 26379, 'chirp-lab')}) || exit 1\n" + cache.STRIP_REWRITE_COPIES)
    cfg = lab("fra1-data-1")
    assert file(st, SETTINGS_FILE).after_change == sync_script(26379, "chirp-lab", cfg.settings, cfg.members, 2,
                                                               cfg.password_hashes)
    assert not file(st, SETTINGS_FILE).notify
    assert st.services == (Unit("redis-server"), Unit("redis-sentinel"))
    assert st.packages == ("redis-server", "redis-sentinel", "redis-tools")
    assert [(d.path, d.mode, d.owner) for d in st.directories] == [("/etc/redis", "2770", "redis")]


def test_strip_keeps_include_replicaof_and_comments(tmp_path: Path) -> None:
    rewritten = (
        "# seeded\ninclude /etc/redis/deploykit.conf\n\n# Generated by CONFIG REWRITE\nreplicaof 10.0.0.2 6379\n"
        'requirepass "old"\nbind 10.0.0.1 127.0.0.1\nsave 3600 1\nuser default on #abc ~* &* +@all\n'
    )
    conf = tmp_path / "redis.conf"
    conf.write_text(rewritten)
    command = cache.STRIP_REWRITE_COPIES.replace(cache.REDIS_CONF, str(conf))
    subprocess.run(["sh", "-c", command], check=True)
    assert conf.read_text() == (
        "# seeded\ninclude /etc/redis/deploykit.conf\n# Generated by CONFIG REWRITE\nreplicaof 10.0.0.2 6379\n"
    )
    subprocess.run(
        ["sh", "-c", cache.STRIP_REWRITE_COPIES.replace(cache.REDIS_CONF, str(tmp_path / "none"))], check=True
    )  # absent file: nothing to do


def test_waits_never_carry_the_password() -> None:
    st = state("fra1-data-1")
    assert [w.description for w in st.waits] == [
        "redis answers PING",
        "redis is the master or a replica in sync",
        "sentinel knows the master",
    ]
    for w in st.waits:
        assert "s3cr3t" not in w.command
        assert f'REDISCLI_AUTH="$(cat {cache.CLI_AUTH})"' in w.command
    assert "-p 26379 sentinel get-master-addr-by-name chirp-lab" in st.waits[2].command


def test_secrets_never_in_repr() -> None:
    cfg = lab("fra1-data-1")
    assert "s3cr3t" not in repr(cfg)
    assert "<secret:cache-password>" in repr(cfg)


@pytest.mark.parametrize("bad", ['pa"ss', "pa ss", "pa'ss", "pa\nss", ""])
def test_a_password_sentinel_could_not_read_back_is_refused(bad: str) -> None:
    ctx = context_of(LAB.inv, lambda name: Secret(name, bad))
    with pytest.raises(ValueError, match="cache password"):
        cache.desired(cache_config(ctx, LAB.inv.host("fra1-data-1")))


# --- golden files ------------------------------------------------------------------------------------------


def golden_cases() -> list[tuple[str, str]]:
    return [(h, f.path) for h in CACHE_HOSTS for f in state(h).files if f.path != cache.CLI_AUTH]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = file(state(host), path).content
    golden = GOLDEN / f"{host}__{Path(path).name}.txt"
    matches_golden(golden, content)
