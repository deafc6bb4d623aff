"""deploykit.plan.resilience: lose each unit of each failure-domain level and judge every tier."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.plan import Status, analyse_resilience, plan_placement
from deploykit.plan.resilience import Scenario, Verdict
from deploykit.services import SERVICES

FOUR_SITES = {
    "fra1": "{provider: hetzner, vip: 10.1.0.100}",
    "fsn1": "{provider: hetzner, vip: 10.4.0.100}",
    "rbx1": "{provider: ovh, vip: 10.2.0.100}",
    "ams1": "{provider: leaseweb, vip: 10.3.0.100}",
}
WEB = {
    "fra1-web-[1:2]": "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}",
    "rbx1-web-[1:2]": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker]}",
    "ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, roles: [lb, app, worker]}",
}


def failures(planned) -> list[tuple[str, str, str]]:
    return [(s.title, v.tier, v.status.value) for s, v in planned.report.failures]


# --- inventories that survive ---------------------------------------------------------------------------------


def test_lab_inventory_survives_every_provider_and_site(repo_root: Path) -> None:
    inv = load_inventory(repo_root / "inventories" / "lab.yml")
    report = analyse_resilience(inv, plan_placement(inv))
    assert report.survives
    assert report.failure_domains == ("provider", "site")
    assert report.tiers == ("dns", "lb", "app", "worker", "db", "etcd", "cache", "backup")
    assert [(s.level, s.unit) for s in report.scenarios] == [
        ("provider", "hetzner"), ("provider", "leaseweb"), ("provider", "ovh"),
        ("site", "ams1"), ("site", "fra1"), ("site", "rbx1"),
    ]
    for s in report.scenarios:
        assert s.status is Status.UP, (s.title, [(v.tier, v.status, v.reason) for v in s.verdicts])
        assert [v.tier for v in s.verdicts] == list(report.tiers)
        assert len(s.lost_hosts) == 3
    assert report.failures == ()
    assert report.degradations == ()


def test_lab_inventory_verdict_reasons(repo_root: Path) -> None:
    inv = load_inventory(repo_root / "inventories" / "lab.yml")
    report = analyse_resilience(inv, plan_placement(inv))
    s = next(s for s in report.scenarios if s.unit == "hetzner")
    assert s.lost_hosts == ("fra1-data-1", "fra1-web-1", "fra1-web-2")
    reasons = {v.tier: v.reason for v in s.verdicts}
    assert reasons["etcd"] == "2 of 3 members keep quorum (2 needed)"
    assert reasons["db"] == ("2 of 3 members left; a synchronous standby outside it has every acknowledged commit "
                             "(1 per commit)")
    assert reasons["cache"] == "2 of 3 Redis servers left; 2 of 3 sentinels can fail over (quorum 2)"
    assert reasons["app"] == "4 of 6 app hosts left (67% capacity)"
    assert reasons["worker"] == "4 of 6 workers left"
    assert reasons["lb"] == ("VIP of fra1 is gone (DNS must stop sending users there); rbx1, ams1 still serve")
    assert reasons["dns"] == ("ns1, ns3 answer (2 of 3); chirp.lab answers 10.77.2.100 (rbx1), 10.77.3.100 (ams1) "
                              "(drops 10.77.1.100 (fra1))")


def test_example_inventory_survives(repo_root: Path) -> None:
    path = repo_root / "inventories" / "example.yml"
    if not path.exists():
        pytest.skip("inventories/example.yml is not written yet")
    inv = load_inventory(path)
    report = analyse_resilience(inv, plan_placement(inv))
    assert report.survives, [(s.title, v.tier, v.reason) for s, v in report.failures]
    assert report.failures == ()


def test_base_inventory_survives(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory())
    assert planned.report.survives
    assert failures(planned) == []
    assert planned.verdict("site", "fra1", "etcd").reason == "2 of 3 members keep quorum (2 needed)"
    assert planned.verdict("provider", "ovh", "worker").reason == "4 of 6 workers left"


def test_unaffected_tiers_say_so(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory(failure_domains="[host]"))
    reasons = {v.tier: v.reason for v in planned.scenario("host", "fra1-web-1").verdicts}
    assert reasons["etcd"] == "all 3 members unaffected"
    assert reasons["db"] == "all 3 members unaffected"
    assert reasons["cache"] == "all 3 Redis servers and sentinels unaffected"
    assert reasons["app"] == "5 of 6 app hosts left (83% capacity)"
    assert reasons["lb"] == "fra1 VIP 10.1.0.100 moves to fra1-web-2"
    assert planned.verdict("host", "fra1-data-1", "app").reason == "all 6 app hosts unaffected"
    assert planned.verdict("host", "fra1-data-1", "lb").reason == "all sites' load balancers unaffected (3 site(s))"


# --- inventories that do not survive, each for a different reason ---------------------------------------------


def test_etcd_with_two_of_three_members_in_one_provider_loses_quorum(make_inventory, plan_text) -> None:
    hosts = {**WEB,
             "fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}",
             "fsn1-data-1": "{address: 10.4.0.21, site: fsn1, roles: [etcd]}",
             "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [db, cache]}",
             "ams1-data-1": "{address: 10.3.0.21, site: ams1, roles: [db, etcd, cache]}"}
    planned = plan_text(make_inventory(hosts=hosts, sites=FOUR_SITES))
    assert not planned.report.survives
    etcd = planned.verdict("provider", "hetzner", "etcd")
    assert etcd.status is Status.DOWN
    assert etcd.reason == "losing provider hetzner loses etcd quorum: 1 of 3 members left, a majority needs 2"
    assert "no single one holds half of its members" in etcd.fix
    db = planned.verdict("provider", "hetzner", "db")
    assert db.status is Status.DOWN
    assert db.reason.startswith("losing provider hetzner: Patroni cannot hold its leader lock without etcd quorum")
    assert failures(planned) == [("losing provider hetzner", "db", "down"), ("losing provider hetzner", "etcd", "down")]
    # losing one of the two hetzner sites keeps quorum
    assert planned.verdict("site", "fsn1", "etcd").reason == "2 of 3 members keep quorum (2 needed)"


def test_all_db_in_one_provider(make_inventory, plan_text) -> None:
    hosts = {**WEB,
             "fra1-db-[1:3]": "{address: 10.1.0.31, site: fra1, roles: [db]}",
             "fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [etcd, cache]}",
             "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [etcd, cache]}",
             "ams1-data-1": "{address: 10.3.0.21, site: ams1, roles: [etcd, cache]}"}
    planned = plan_text(make_inventory(hosts=hosts))
    assert not planned.report.survives
    for level, unit in (("provider", "hetzner"), ("site", "fra1")):
        db = planned.verdict(level, unit, "db")
        assert db.status is Status.DOWN
        assert db.reason == f"losing {level} {unit} loses all 3 PostgreSQL members"
        assert db.fix == f"add a db host (with the etcd role if etcd needs a member there) in another {level}"
        assert planned.verdict(level, unit, "etcd").status is Status.UP
    assert failures(planned) == [("losing provider hetzner", "db", "down"), ("losing site fra1", "db", "down")]


def test_sentinel_majority_lost(make_inventory, plan_text) -> None:
    hosts = {**WEB,
             "fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}",
             "fra1-cache-2": "{address: 10.1.0.22, site: fra1, roles: [cache]}",
             "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache]}",
             "ams1-data-1": "{address: 10.3.0.21, site: ams1, roles: [db, etcd]}"}
    planned = plan_text(make_inventory(hosts=hosts))
    cache = planned.verdict("provider", "hetzner", "cache")
    assert cache.status is Status.DOWN
    assert cache.reason == ("losing provider hetzner: if the Redis master was there, no failover happens: 1 of 3 "
                            "sentinels left, electing a failover leader needs 2")
    assert cache.fix == "run sentinels (cache role) in at least 3 failure domains"
    assert failures(planned) == [("losing provider hetzner", "cache", "down"), ("losing site fra1", "cache", "down")]
    assert planned.verdict("provider", "ovh", "cache").reason == (
        "2 of 3 Redis servers left; 2 of 3 sentinels can fail over (quorum 2)")


def test_all_cache_in_one_site(make_inventory, base_hosts, plan_text) -> None:
    hosts = {k: v.replace(", cache", "") for k, v in base_hosts.items()}
    hosts["fra1-cache-1"] = "{address: 10.1.0.41, site: fra1, roles: [cache]}"
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[site]"))
    v = planned.verdict("site", "fra1", "cache")
    assert (v.status, v.reason) == (Status.DOWN, "losing site fra1 loses all 1 Redis servers")


def test_all_load_balancers_in_one_site(make_inventory, base_hosts, plan_text) -> None:
    hosts = {k: (v if k.startswith("fra1") else v.replace("lb, ", "")) for k, v in base_hosts.items()}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[site]"))
    assert not planned.report.survives
    lb = planned.verdict("site", "fra1", "lb")
    assert lb.status is Status.DOWN
    assert lb.reason == "losing site fra1 leaves no load balancer in any site"
    assert lb.fix == "add lb hosts (and a vip) in a site of another provider"
    assert planned.verdict("site", "rbx1", "lb").reason == "all sites' load balancers unaffected (1 site(s))"
    assert failures(planned) == [("losing site fra1", "lb", "down")]


def test_all_app_hosts_in_one_site(make_inventory, base_hosts, plan_text) -> None:
    hosts = {k: (v if k.startswith("fra1") else v.replace("app, ", "")) for k, v in base_hosts.items()}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[site]"))
    app = planned.verdict("site", "fra1", "app")
    assert (app.status, app.reason) == (Status.DOWN, "losing site fra1 loses all 2 app hosts")
    assert failures(planned) == [("losing site fra1", "app", "down")]


def test_all_workers_in_one_site(make_inventory, base_hosts, plan_text) -> None:
    hosts = {k: (v if k.startswith("fra1") else v.replace(", worker", "")) for k, v in base_hosts.items()}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[site]"))
    worker = planned.verdict("site", "fra1", "worker")
    assert worker.status is Status.DOWN
    assert worker.reason == "losing site fra1 loses all 2 workers: timelines stop filling"
    assert failures(planned) == [("losing site fra1", "worker", "down")]


def test_host_level_with_a_single_lb_per_site(make_inventory, plan_text) -> None:
    hosts = {"fra1-web-1": "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}",
             "rbx1-web-1": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker]}",
             "ams1-web-1": "{address: 10.3.0.11, site: ams1, roles: [lb, app, worker]}",
             "data-[1:3]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}"}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[host]"))
    lb = planned.verdict("host", "fra1-web-1", "lb")
    # the site's VIP is gone but the other sites still serve: up, with the reason saying what happened
    assert lb.status is Status.UP
    assert lb.reason == "VIP of fra1 is gone (DNS must stop sending users there); rbx1, ams1 still serve"
    assert planned.report.survives


def test_host_level_with_a_single_lb_in_a_single_site(make_inventory, plan_text) -> None:
    hosts = {"web-1": "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}",
             "web-2": "{address: 10.1.0.12, site: fra1, roles: [app, worker]}",
             "data-[1:3]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}"}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[host]",
                                       sites={"fra1": "{provider: hetzner, vip: 10.1.0.100}"}))
    assert not planned.report.survives
    lb = planned.verdict("host", "web-1", "lb")
    assert (lb.status, lb.reason) == (Status.DOWN, "losing host web-1 leaves no load balancer in any site")
    assert failures(planned) == [("losing host web-1", "lb", "down")]
    assert planned.verdict("host", "web-2", "lb").status is Status.UP


def test_rack_level_uses_site_and_rack_units(make_inventory, plan_text) -> None:
    hosts = {**{k: v.replace("{", "{rack: r1, ") for k, v in WEB.items()},
             "fra1-data-[1:2]": "{address: 10.1.0.21, site: fra1, rack: r2, roles: [db, etcd, cache]}",
             "fra1-data-3": "{address: 10.1.0.23, site: fra1, roles: [db, etcd, cache]}"}
    planned = plan_text(make_inventory(hosts=hosts, failure_domains="[rack]"))
    units = [s.unit for s in planned.report.scenarios]
    assert units == ["ams1/r1", "fra1/fra1-data-3", "fra1/r1", "fra1/r2", "rbx1/r1"]
    assert planned.scenario("rack", "fra1/r2").lost_hosts == ("fra1-data-1", "fra1-data-2")
    etcd = planned.verdict("rack", "fra1/r2", "etcd")
    assert (etcd.status, etcd.reason) == (
        Status.DOWN, "losing rack fra1/r2 loses etcd quorum: 1 of 3 members left, a majority needs 2")
    assert planned.scenario("rack", "fra1/r2").title == "losing rack fra1/r2"
    assert planned.scenario("rack", "fra1/fra1-data-3").status is Status.UP  # a rackless host is its own rack
    assert planned.placement["db"].sync_standbys == 2  # rack fra1/r2 holds 2 of the 3 db members
    assert not planned.report.survives


def test_host_unit_per_level(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, rack: r7, roles: [lb, app, worker]}"
    inv = load_text(make_inventory(hosts=base_hosts))
    racked, rackless = inv.host("fra1-web-1"), inv.host("fra1-data-1")
    assert [racked.unit(level) for level in ("provider", "site", "rack", "host")] == [
        "hetzner", "fra1", "fra1/r7", "fra1-web-1"]
    assert rackless.unit("rack") == "fra1/fra1-data-1"


# --- degraded but surviving -----------------------------------------------------------------------------------


def test_app_capacity_below_min_capacity_is_degraded(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory(services="services:\n  app: {min_capacity: 0.75}"))
    app = planned.verdict("site", "fra1", "app")
    assert app.status is Status.DEGRADED
    assert app.reason == "4 of 6 app hosts left (67%), below min_capacity 75%"
    assert app.fix == "spread app hosts more evenly or add some, so that any loss keeps min_capacity"
    assert planned.report.survives
    assert planned.scenario("site", "fra1").status is Status.DEGRADED
    assert len(planned.report.degradations) == 6
    assert planned.report.failures == ()


def test_app_capacity_exactly_at_min_capacity_is_up(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory(services="services:\n  app: {min_capacity: 0.6667}"))
    assert planned.verdict("site", "fra1", "app").status is Status.DEGRADED
    planned = plan_text(make_inventory(services="services:\n  app: {min_capacity: 0.6666}"))
    assert planned.verdict("site", "fra1", "app").status is Status.UP


def test_asynchronous_db_is_degraded(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory(services="services:\n  db: {synchronous: false}"))
    db = planned.verdict("provider", "ovh", "db")
    assert db.status is Status.DEGRADED
    assert db.reason == "2 of 3 members left; asynchronous replication: commits not yet replicated may be lost"
    assert planned.report.survives


def test_two_db_members_leave_one(make_inventory, base_hosts, plan_text) -> None:
    base_hosts["ams1-data-1"] = "{address: 10.3.0.21, site: ams1, roles: [etcd, cache]}"
    planned = plan_text(make_inventory(hosts=base_hosts))
    db = planned.verdict("provider", "hetzner", "db")
    assert db.status is Status.DEGRADED
    assert db.reason == ("losing provider hetzner leaves 1 of 2 PostgreSQL members, which Patroni promotes if "
                         "needed; writes go on without a synchronous standby until one returns")
    assert db.fix == "add a db host in a third failure domain to keep a replica"
    assert planned.verdict("provider", "leaseweb", "db").reason == "all 2 members unaffected"
    assert planned.report.survives


def test_two_async_db_members_leave_no_replica(make_inventory, base_hosts, plan_text) -> None:
    base_hosts["ams1-data-1"] = "{address: 10.3.0.21, site: ams1, roles: [etcd, cache]}"
    planned = plan_text(make_inventory(hosts=base_hosts, services="services:\n  db: {synchronous: false}"))
    assert planned.verdict("site", "rbx1", "db").reason.endswith("which Patroni promotes if needed; no replica left")


# --- the report's own logic -----------------------------------------------------------------------------------


def test_only_present_tiers_are_judged(make_inventory, plan_text) -> None:
    hosts = {k: v.replace(", worker", "") for k, v in WEB.items()}
    planned = plan_text(make_inventory(hosts=hosts))
    assert planned.report.tiers == ("lb", "app")
    assert all([v.tier for v in s.verdicts] == ["lb", "app"] for s in planned.report.scenarios)


def test_scenario_status_is_the_worst_verdict() -> None:
    up, degraded, down = (Verdict("x", st, "") for st in (Status.UP, Status.DEGRADED, Status.DOWN))
    assert Scenario("site", "a", (), (up, degraded)).status is Status.DEGRADED
    assert Scenario("site", "a", (), (degraded, down, up)).status is Status.DOWN
    assert Scenario("site", "a", (), ()).status is Status.UP
    assert [s.rank for s in Status] == [0, 1, 2]
    columns = tuple(s.name for s in sorted(SERVICES, key=lambda s: s.tier_column) if s.role is not None)
    assert columns == ("dns", "lb", "app", "worker", "db", "etcd", "cache", "backup")


def test_one_scenario_per_unit_per_level(make_inventory, plan_text) -> None:
    planned = plan_text(make_inventory(failure_domains="[provider, site, host]"))
    levels = [s.level for s in planned.report.scenarios]
    assert levels == ["provider"] * 3 + ["site"] * 3 + ["host"] * 9
    assert [s.unit for s in planned.report.scenarios if s.level == "host"] == sorted(
        h.name for h in planned.inventory.hosts)
