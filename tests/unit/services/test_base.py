"""Role base: firewall sources per port, sysctls, /etc/hosts; golden files for every lab host.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import RoleState
from deploykit.secret import Secret
from deploykit.services.base import state as base
from deploykit.services.base.config import BaseHostConfig, FirewallRule, base_config
from deploykit.services.contract import ConfigContext

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "base"


def context(name: str) -> ConfigContext:
    inv = load_inventory(REPO / "inventories" / name)
    return ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "s3cr3t-" + s))


LAB = context("lab.yml")
EXAMPLE = context("example.yml")


MESH_RULE = "WireGuard mesh from the inventory's hosts"


def addresses(inv: Inventory, *names: str) -> tuple[IPv4Address, ...]:
    """Mesh addresses: every internal port's sources."""
    return tuple(inv.host(n).mesh_address for n in names)


def rules(ctx: ConfigContext, host: str) -> dict[str, FirewallRule]:
    cfg = base_config(ctx, ctx.inv.host(host))
    return {r.description: r for r in cfg.firewall}


def with_roles(inv: Inventory, *roles: str) -> tuple[IPv4Address, ...]:
    return tuple(h.mesh_address for h in inv.hosts if any(h.has(r) for r in roles))


def test_data_host_opens_exactly_its_services_to_exactly_their_clients() -> None:
    inv = LAB.inv
    got = rules(LAB, "fra1-data-1")
    assert list(got) == ["ssh", MESH_RULE, "etcd client", "etcd peer", "PostgreSQL", "Patroni REST API",
                         "PgBouncer", "Redis", "Redis Sentinel", "DNS", "DNS over TCP"]
    data = addresses(inv, "ams1-data-1", "fra1-data-1", "rbx1-data-1")
    web = tuple(h.mesh_address for h in inv.hosts if "web" in h.name)
    assert got["ssh"] == FirewallRule("ssh", "tcp", 22, None)
    # WireGuard from the other hosts' public addresses; everything internal only on the mesh, from mesh addresses
    assert got[MESH_RULE] == FirewallRule(MESH_RULE, "udp", 51820,
                                          tuple(h.address for h in inv.hosts if h.name != "fra1-data-1"))
    internal = [r for r in got.values() if r.description not in ("ssh", MESH_RULE, "DNS", "DNS over TCP")]
    assert internal and all(r.interface == "mesh0" and r.sources for r in internal)
    assert all(a in inv.mesh.network for r in internal for a in r.sources or ())
    assert got["etcd client"].port == 2379 and got["etcd client"].sources == data
    assert got["etcd peer"].port == 2380 and got["etcd peer"].sources == data
    assert got["PostgreSQL"].sources == data  # replication and pg_rewind; clients go through PgBouncer
    assert set(got["Patroni REST API"].sources or ()) == set(data + web)  # db + lb (web hosts are lbs)
    assert got["PgBouncer"].port == 6432 and set(got["PgBouncer"].sources or ()) == set(web)  # HAProxy's
    assert set(got["Redis"].sources or ()) == set(data + web)
    # the lab's dns servers (data hosts) answer anyone, over UDP and TCP
    assert (got["DNS"], got["DNS over TCP"]) == (FirewallRule("DNS", "udp", 53, None),
                                                 FirewallRule("DNS over TCP", "tcp", 53, None))
    assert "DNS" not in rules(LAB, "fra1-web-1")


def test_sources_follow_roles_not_host_names() -> None:
    inv = EXAMPLE.inv
    db = rules(EXAMPLE, "fra1-db-1")
    assert db["etcd client"].sources == with_roles(inv, "etcd", "db")
    assert db["etcd peer"].sources == with_roles(inv, "etcd")
    assert db["PostgreSQL"].sources == with_roles(inv, "db")  # the members only
    assert db["Patroni REST API"].sources == with_roles(inv, "db", "lb")
    assert db["PgBouncer"].sources == with_roles(inv, "lb")  # not the 120 app hosts
    assert "Redis" not in db  # a port opens only where its service listens
    cache = rules(EXAMPLE, "fra1-cache-1")
    assert list(cache) == ["ssh", MESH_RULE, "Redis", "Redis Sentinel", "DNS", "DNS over TCP"]
    assert cache["Redis Sentinel"].sources == with_roles(inv, "cache", "app", "worker", "lb")
    app = rules(EXAMPLE, "rbx1-app-07")
    assert list(app) == ["ssh", MESH_RULE, "app"]
    assert app["app"].port == 8000 and app["app"].sources == with_roles(inv, "lb")


def test_load_balancer_rules() -> None:
    inv = EXAMPLE.inv
    lb = rules(EXAMPLE, "rbx1-lb-2")
    assert lb["HTTP"] == FirewallRule("HTTP", "tcp", 80, None)
    for name, port in (
        ("HAProxy PostgreSQL primary", 5000),
        ("HAProxy PostgreSQL replicas", 5001),
        ("HAProxy Redis", 6380),
    ):
        assert lb[name].port == port and lb[name].sources == with_roles(inv, "app", "worker")
    assert lb["HAProxy stats"].port == 8404 and lb["HAProxy stats"].sources == with_roles(inv, "lb")
    vrrp = lb["VRRP from the site's other load balancers"]
    assert (vrrp.protocol, vrrp.port, vrrp.sources) == ("vrrp", None, addresses(inv, "rbx1-lb-1"))


def test_no_rule_without_sources_and_no_haproxy_port_without_backends(make_inventory, load_text) -> None:
    hosts = {
        "fra1-lb-1": "{address: 10.1.0.11, site: fra1, roles: [lb]}",
        "fra1-data-[1:3]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd]}",
    }
    inv = load_text(
        make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.100}"}, failure_domains="[host]")
    )
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))
    got = [r.description for r in base_config(ctx, inv.host("fra1-lb-1")).firewall]
    # No cache hosts: no Redis frontend. No app/worker hosts: nobody may use the db frontends.
    # A single lb in its site: no VRRP peers.
    assert got == ["ssh", MESH_RULE, "HTTP", "HTTPS", "HAProxy stats"]


def test_ssh_port_comes_from_the_host(make_inventory, load_text) -> None:
    hosts = {"fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd], ssh: {port: 2222}}"}
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner}"}, failure_domains="[host]"))
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))
    assert base_config(ctx, inv.host("fra1-data-1")).firewall[0] == FirewallRule("ssh", "tcp", 2222, None)


def test_sysctls_by_role() -> None:
    def keys(ctx: ConfigContext, host: str) -> dict[str, str]:
        return {s.key: s.value for s in base_config(ctx, ctx.inv.host(host)).sysctls}

    # every host binds its mesh address (the mesh service), whether or not mesh0 is up yet
    common = {"net.core.somaxconn": "4096", "net.ipv4.ip_nonlocal_bind": "1"}
    assert keys(EXAMPLE, "fra1-lb-1") == common
    assert keys(EXAMPLE, "fra1-db-1") == {**common, "vm.swappiness": "1"}
    assert keys(EXAMPLE, "fra1-app-01") == common
    assert keys(LAB, "fra1-data-1") == {**common, "vm.overcommit_memory": "1", "vm.swappiness": "1"}


def test_sysctls_are_applied_now_and_read_only_keys_skipped() -> None:
    state = base.desired(base_config(LAB, LAB.inv.host("fra1-data-1")))
    sysctl = next(f for f in state.files if f.path == "/etc/sysctl.d/60-deploykit.conf")
    assert sysctl.after_change == (
        "if [ -w /proc/sys/net/core/somaxconn ]; then sysctl -q -w net.core.somaxconn=4096; "
        "else echo 'skipped net.core.somaxconn: read-only here'; fi && "
        "if [ -w /proc/sys/net/ipv4/ip_nonlocal_bind ]; then sysctl -q -w net.ipv4.ip_nonlocal_bind=1; "
        "else echo 'skipped net.ipv4.ip_nonlocal_bind: read-only here'; fi && "
        "if [ -w /proc/sys/vm/overcommit_memory ]; then sysctl -q -w vm.overcommit_memory=1; "
        "else echo 'skipped vm.overcommit_memory: read-only here'; fi && "
        "if [ -w /proc/sys/vm/swappiness ]; then sysctl -q -w vm.swappiness=1; "
        "else echo 'skipped vm.swappiness: read-only here'; fi"
    )


def test_hosts_file_lists_every_host_by_name() -> None:
    cfg = base_config(EXAMPLE, EXAMPLE.inv.host("fra1-lb-1"))
    assert [e.name for e in cfg.hosts_entries] == sorted(h.name for h in EXAMPLE.inv.hosts)


def test_state_validates_and_never_restarts_nftables() -> None:
    state = base.desired(base_config(LAB, LAB.inv.host("fra1-web-1")))
    files = {f.path: f for f in state.files}
    nft = files["/etc/nftables.conf"]
    assert nft.validate == "nft -c -f {path}" and nft.after_change == "nft -f /etc/nftables.conf"
    assert nft.notify == ()
    sshd = files["/etc/ssh/sshd_config.d/05-deploykit.conf"]
    assert sshd.notify == ("ssh",) and "sshd -t -f" in (sshd.validate or "") and "{path}" in (sshd.validate or "")
    services = {s.name: s for s in state.services}
    assert services["ssh"].reload and services["nftables"].enabled and services["nftables"].running


# golden files ------------------------------------------------------------------------------------------------


def golden_cases() -> list[tuple[str, str]]:
    return [(h.name, f.path) for h in LAB.inv.hosts for f in desired_for(h.name).files]


def desired_for(host: str) -> RoleState:
    cfg: BaseHostConfig = base_config(LAB, LAB.inv.host(host))
    return base.desired(cfg)


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = next(f.content for f in desired_for(host).files if f.path == path)
    golden = GOLDEN / f"{host}__{Path(path).name}.txt"
    matches_golden(golden, content)
