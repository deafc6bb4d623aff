"""deploykit.plan.placement: etcd, Patroni, Redis, VRRP and HAProxy decisions, computed from the inventory."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from deploykit.plan import plan_placement
from deploykit.plan.placement import Member, largest_share, units
from deploykit.plan.serialize import offline_plan_data, to_data
from deploykit.services.contract import Backend
from deploykit.services.lb.placement import VRRP_FIRST_ROUTER_ID, VRRP_STEP, VRRP_TOP_PRIORITY

FOUR_SITES = {
    "fra1": "{provider: hetzner, vip: 10.1.0.100}",
    "fsn1": "{provider: hetzner, vip: 10.4.0.100}",
    "rbx1": "{provider: ovh, vip: 10.2.0.100}",
    "ams1": "{provider: leaseweb, vip: 10.3.0.100}",
}


@pytest.fixture
def base(make_inventory, load_text):
    inv = load_text(make_inventory())
    return inv, plan_placement(inv)


# --- etcd ---------------------------------------------------------------------------------------------------


def test_etcd_members_quorum_and_initial_cluster(base) -> None:
    inv, p = base
    mesh = {h.name: h.mesh_address for h in inv.hosts}  # members talk over the WireGuard mesh
    assert [m.name for m in p["etcd"].members] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert p["etcd"].members[1] == Member("fra1-data-1", IPv4Address("10.1.0.21"), "fra1", "hetzner")
    assert p["etcd"].quorum == 2
    assert p["etcd"].token == "chirp-test-etcd"
    assert p["etcd"].initial_cluster == (
        f"ams1-data-1=http://{mesh['ams1-data-1']}:2380,fra1-data-1=http://{mesh['fra1-data-1']}:2380,"
        f"rbx1-data-1=http://{mesh['rbx1-data-1']}:2380"
    )
    assert p["etcd"].endpoints == tuple(f"{mesh[n]}:2379" for n in ("ams1-data-1", "fra1-data-1", "rbx1-data-1"))


def test_etcd_ports_come_from_services(make_inventory, load_text) -> None:
    inv = load_text(make_inventory(services="services:\n  etcd: {client_port: 12379, peer_port: 12380}"))
    p = plan_placement(inv)
    first = inv.host("ams1-data-1").mesh_address
    assert p["etcd"].initial_cluster.split(",")[0] == f"ams1-data-1=http://{first}:12380"
    assert p["etcd"].endpoints[0] == f"{first}:12379"


@pytest.mark.parametrize(("count", "quorum"), [(1, 1), (3, 2), (5, 3), (7, 4)])
def test_etcd_quorum_is_a_majority(make_inventory, load_text, count: int, quorum: int) -> None:
    hosts = {
        "web-1": "{address: 10.1.0.11, site: fra1, roles: [lb, app]}",
        f"etcd-[1:{count}]": "{address: 10.1.0.21, site: fra1, roles: [etcd]}",
    }
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.100}"}))
    p = plan_placement(inv)
    assert len(p["etcd"].members) == count
    assert p["etcd"].quorum == quorum


def test_no_etcd_hosts_gives_an_empty_cluster(make_inventory, load_text) -> None:
    hosts = {"web-[1:2]": "{address: 10.1.0.11, site: fra1, roles: [lb, app]}"}
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.100}"}))
    p = plan_placement(inv)
    assert p["etcd"].members == ()
    assert p["etcd"].initial_cluster == ""
    assert p["db"].members == () and p["db"].bootstrap is None
    assert p["cache"].master is None


# --- db (Patroni) -------------------------------------------------------------------------------------------


def test_three_db_in_three_providers_need_one_sync_standby(base) -> None:
    _, p = base
    assert [m.name for m in p["db"].members] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert p["db"].bootstrap == "ams1-data-1"
    assert p["db"].scope == "chirp-test"
    assert p["db"].synchronous is True
    assert p["db"].sync_standbys == 1
    assert p["db"].sync_reason == "no failure-domain unit holds two db members"
    assert (p["db"].port, p["db"].patroni_port) == (5432, 8008)


def test_four_db_with_two_in_one_provider_need_two_sync_standbys(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fsn1-data-1": "{address: 10.4.0.21, site: fsn1, roles: [db]}"}
    inv = load_text(make_inventory(hosts=hosts, sites=FOUR_SITES))
    p = plan_placement(inv)
    assert len(p["db"].members) == 4
    assert p["db"].sync_standbys == 2
    assert p["db"].sync_reason == "provider hetzner holds 2 of 4 db members"


def test_two_db_in_one_site_with_host_level_only(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fra1-data-2": "{address: 10.1.0.22, site: fra1, roles: [db]}"}
    inv = load_text(make_inventory(hosts=hosts, failure_domains="[host]"))
    p = plan_placement(inv)
    assert p["db"].sync_standbys == 1
    assert p["db"].sync_reason == "no failure-domain unit holds two db members"


def test_sync_standbys_never_exceed_the_other_members(make_inventory, load_text) -> None:
    hosts = {
        "web-1": "{address: 10.1.0.11, site: fra1, roles: [lb, app]}",
        "db-[1:3]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd]}",
    }
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.100}"}))
    p = plan_placement(inv)
    assert p["db"].sync_standbys == 2  # all 3 in one provider: capped at members - 1
    assert p["db"].sync_reason == "provider hetzner holds 3 of 3 db members"


def test_asynchronous_db_has_no_sync_standby(make_inventory, load_text) -> None:
    p = plan_placement(load_text(make_inventory(services="services:\n  db: {synchronous: false}")))
    assert p["db"].synchronous is False
    assert p["db"].sync_standbys == 0
    assert p["db"].sync_reason == "asynchronous replication"


def test_single_db_has_no_sync_standby(make_inventory, base_hosts, load_text) -> None:
    hosts = {k: (v.replace("db, ", "") if not k.startswith("fra1-data") else v) for k, v in base_hosts.items()}
    p = plan_placement(load_text(make_inventory(hosts=hosts)))
    assert [m.name for m in p["db"].members] == ["fra1-data-1"]
    assert p["db"].sync_standbys == 0
    assert p["db"].sync_reason == "a single member"
    assert p["db"].bootstrap == "fra1-data-1"


def test_largest_share_checks_every_level(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fsn1-data-1": "{address: 10.4.0.21, site: fsn1, roles: [db]}"}
    inv = load_text(make_inventory(hosts=hosts, sites=FOUR_SITES))
    members = tuple(Member(h.name, h.address, h.site, h.provider) for h in inv.with_role("db"))
    by_name = {h.name: h for h in inv.hosts}
    assert largest_share(members, by_name, ("site",)) == (1, "site ams1")
    assert largest_share(members, by_name, ("provider", "site")) == (2, "provider hetzner")
    assert largest_share((), by_name, ("provider",)) == (0, "")


# --- cache (Redis + sentinel) ---------------------------------------------------------------------------------


def test_cache_master_sentinels_and_quorum(base) -> None:
    _, p = base
    assert [m.name for m in p["cache"].members] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert p["cache"].master == "ams1-data-1"
    assert p["cache"].sentinels == p["cache"].members
    assert p["cache"].quorum == 2
    assert (p["cache"].port, p["cache"].sentinel_port) == (6379, 26379)


# --- VRRP -----------------------------------------------------------------------------------------------------


def test_vrrp_router_ids_per_site_start_at_51(base) -> None:
    _, p = base
    assert [(s.site, s.router_id) for s in p["lb"]] == [("fra1", 51), ("rbx1", 52), ("ams1", 53)]
    assert VRRP_FIRST_ROUTER_ID == 51
    assert [(s.provider, str(s.vip)) for s in p["lb"]] == [
        ("hetzner", "10.1.0.100"), ("ovh", "10.2.0.100"), ("leaseweb", "10.3.0.100")]


def test_vrrp_priorities_in_name_order(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fra1-lb-c": "{address: 10.1.0.31, site: fra1, roles: [lb]}",
             "fra1-lb-a": "{address: 10.1.0.32, site: fra1, roles: [lb]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts)))
    fra1 = p["lb"][0]
    assert [(m.name, m.priority) for m in fra1.members] == [
        ("fra1-lb-a", 150), ("fra1-lb-c", 140), ("fra1-web-1", 130), ("fra1-web-2", 120)]
    assert fra1.members[0].address == IPv4Address("10.1.0.32")
    assert [(m.name, m.priority) for m in p["lb"][1].members] == [("rbx1-web-1", 150), ("rbx1-web-2", 140)]


def test_vrrp_order_is_the_natural_name_order(make_inventory, load_text) -> None:
    hosts = {"lb-[8:11]": "{address: 10.1.0.8, site: fra1, roles: [lb, app]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: h, vip: 10.1.0.100}"})))
    names = [m.name for m in p["lb"][0].members]
    assert names == ["lb-8", "lb-9", "lb-10", "lb-11"]  # lb-8 leads: numbers compare as numbers
    assert [m.priority for m in p["lb"][0].members] == [150, 140, 130, 120]


def test_vrrp_priority_never_drops_below_one(make_inventory, load_text) -> None:
    hosts = {"lb-[01:20]": "{address: 10.1.0.1, site: fra1, roles: [lb, app]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: h, vip: 10.1.0.100}"})))
    prios = [m.priority for m in p["lb"][0].members]
    assert prios[:3] == [VRRP_TOP_PRIORITY, VRRP_TOP_PRIORITY - VRRP_STEP, VRRP_TOP_PRIORITY - 2 * VRRP_STEP]
    assert prios[14:] == [10, 1, 1, 1, 1, 1]
    assert min(prios) == 1


def test_site_without_vip_gets_no_lb_plan(make_inventory, base_hosts, base_sites, load_text) -> None:
    sites = {"fra1": base_sites["fra1"], "dbx1": "{provider: ovh}", "rbx1": base_sites["rbx1"],
             "ams1": base_sites["ams1"]}
    hosts = {**base_hosts, "dbx1-app-1": "{address: 10.9.0.1, site: dbx1, roles: [app]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts, sites=sites)))
    assert [s.site for s in p["lb"]] == ["fra1", "rbx1", "ams1"]
    ids = [s.router_id for s in p["lb"]]
    assert ids[0] == 51
    assert len(set(ids)) == len(ids)


def test_site_with_vip_and_no_lbs_has_an_empty_member_list(make_inventory, base_hosts, base_sites, load_text) -> None:
    sites = {**base_sites, "lon1": "{provider: ovh, vip: 10.5.0.100}"}
    hosts = {**base_hosts, "lon1-app-1": "{address: 10.5.0.11, site: lon1, roles: [app]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts, sites=sites)))
    lon1 = p["lb"][-1]
    assert (lon1.site, lon1.router_id, lon1.members) == ("lon1", 54, ())


# --- HAProxy frontends ----------------------------------------------------------------------------------------


def test_app_backends_local_first_others_backup(base) -> None:
    inv, p = base
    fra1 = p["lb"][0]
    app = fra1.frontends[0]
    assert (app.name, app.port, app.mode, app.check) == ("app", 80, "http", "GET /healthz")
    assert [(b.name, b.backup) for b in app.backends] == [
        ("ams1-web-1", True), ("ams1-web-2", True), ("fra1-web-1", False), ("fra1-web-2", False),
        ("rbx1-web-1", True), ("rbx1-web-2", True)]
    assert app.backends[2] == Backend("fra1-web-1", inv.host("fra1-web-1").mesh_address, 8000, False)  # on the mesh


def test_site_without_app_hosts_uses_every_app_host(make_inventory, base_hosts, base_sites, load_text) -> None:
    sites = {**base_sites, "edge1": "{provider: ovh, vip: 10.6.0.100}"}
    hosts = {**base_hosts, "edge1-lb-1": "{address: 10.6.0.11, site: edge1, roles: [lb]}"}
    p = plan_placement(load_text(make_inventory(hosts=hosts, sites=sites)))
    edge = next(s for s in p["lb"] if s.site == "edge1")
    app = next(f for f in edge.frontends if f.name == "app")
    assert len(app.backends) == 6
    assert not any(b.backup for b in app.backends)


def test_app_ports_come_from_services(make_inventory, load_text) -> None:
    inv = load_text(make_inventory(services="services:\n  app: {port: 9000, health: /up}\n  lb: {http_port: 8080}"))
    app = plan_placement(inv)["lb"][0].frontends[0]
    assert (app.port, app.check) == (8080, "GET /up")
    assert {b.port for b in app.backends} == {9000}


def test_db_frontends_use_the_patroni_check_port(base) -> None:
    _, p = base
    fronts = {f.name: f for f in p["lb"][0].frontends}
    primary, replicas = fronts["db-primary"], fronts["db-replicas"]
    assert (primary.port, primary.mode, primary.check) == (5000, "tcp", "GET /primary on :8008")
    assert (replicas.port, replicas.mode, replicas.check) == (5001, "tcp", "GET /replica on :8008")
    for f in (primary, replicas):
        assert [(b.name, b.port, b.check_port, b.backup) for b in f.backends] == [  # each member's pooler
            ("ams1-data-1", 6432, 8008, False), ("fra1-data-1", 6432, 8008, False),
            ("rbx1-data-1", 6432, 8008, False)]


def test_db_frontends_follow_custom_ports(make_inventory, load_text) -> None:
    inv = load_text(make_inventory(services="services:\n  db: {port: 6543, patroni_port: 9008}\n"
                                            "  pooler: {port: 7432}\n"
                                            "  lb: {db_primary_port: 7000, db_replica_port: 7001}"))
    fronts = {f.name: f for f in plan_placement(inv)["lb"][0].frontends}
    assert (fronts["db-primary"].port, fronts["db-primary"].check) == (7000, "GET /primary on :9008")
    assert fronts["db-replicas"].port == 7001
    assert {(b.port, b.check_port) for b in fronts["db-replicas"].backends} == {(7432, 9008)}


def test_cache_frontend(base) -> None:
    _, p = base
    cache = p["lb"][1].frontends[-1]
    assert (cache.name, cache.port, cache.mode, cache.check) == ("cache", 6380, "tcp", "redis role:master")
    assert [(b.name, b.port, b.backup, b.check_port) for b in cache.backends] == [
        ("ams1-data-1", 6379, False, None), ("fra1-data-1", 6379, False, None), ("rbx1-data-1", 6379, False, None)]


def test_frontend_order_and_presence(make_inventory, base_hosts, load_text) -> None:
    full = plan_placement(load_text(make_inventory()))
    assert [f.name for f in full["lb"][0].frontends] == ["app", "db-primary", "db-replicas", "cache"]
    hosts = {k: v for k, v in base_hosts.items() if "web" in k}
    p = plan_placement(load_text(make_inventory(hosts=hosts)))
    assert [f.name for f in p["lb"][0].frontends] == ["app"]


def test_every_site_gets_the_same_non_app_frontends(base) -> None:
    _, p = base
    for s in p["lb"][1:]:
        assert s.frontends[1:] == p["lb"][0].frontends[1:]


# --- app, workers, order --------------------------------------------------------------------------------------


def test_app_and_worker_members(base) -> None:
    _, p = base
    names = ["ams1-web-1", "ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2"]
    assert [m.name for m in p["app"].members] == names
    assert [m.name for m in p["worker"].members] == names
    assert p.name == "chirp-test"
    assert p.failure_domains == ("provider", "site")


def test_placement_does_not_depend_on_the_order_of_the_file(make_inventory, base_hosts, load_text) -> None:
    first = plan_placement(load_text(make_inventory()))
    reversed_hosts = dict(reversed(list(base_hosts.items())))
    second = plan_placement(load_text(make_inventory(hosts=reversed_hosts)))
    assert first == second


def test_units_are_sorted_and_hold_sorted_hosts(base) -> None:
    inv, _ = base
    by_provider = units(inv, "provider")
    assert list(by_provider) == ["hetzner", "leaseweb", "ovh"]
    assert [h.name for h in by_provider["hetzner"]] == ["fra1-data-1", "fra1-web-1", "fra1-web-2"]
    assert list(units(inv, "site")) == ["ams1", "fra1", "rbx1"]
    assert len(units(inv, "host")) == 9


def test_rack_units_use_site_and_rack(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, rack: r1, roles: [lb, app, worker]}"
    inv = load_text(make_inventory(hosts=base_hosts, failure_domains="[rack]"))
    racks = units(inv, "rack")
    assert [h.name for h in racks["fra1/r1"]] == ["fra1-web-1", "fra1-web-2"]
    assert "fra1/fra1-data-1" in racks  # a host without a rack is a rack of its own
    assert len(racks) == 8


# --- serialisation --------------------------------------------------------------------------------------------


def test_offline_plan_data_is_json(base) -> None:
    from deploykit.plan import analyse_resilience

    inv, p = base
    data = json.loads(json.dumps(offline_plan_data(inv, p, analyse_resilience(inv, p))))
    assert data["format"] == "deploykit.plan/v1"
    assert data["hosts"] == 9
    assert data["sites"]["fra1"] == {"provider": "hetzner", "vip": "10.1.0.100"}
    assert data["placement"]["etcd"]["initial_cluster"] == p["etcd"].initial_cluster
    assert data["placement"]["db"]["sync_standbys"] == 1
    assert data["placement"]["lb"][0]["router_id"] == 51
    assert data["placement"]["lb"][0]["members"][0] == {"name": "fra1-web-1", "address": "10.1.0.11",
                                                        "priority": 150}
    assert data["resilience"]["survives"] is True
    assert len(data["resilience"]["scenarios"]) == 6
    assert data["warnings"] == []


def test_to_data_handles_enums_paths_and_addresses() -> None:
    from pathlib import Path

    from deploykit.plan import Status

    assert to_data({1: (IPv4Address("10.0.0.1"), Path("/x"), Status.DOWN)}) == {"1": ["10.0.0.1", "/x", "down"]}
