"""Hosts in natural name order (lb-2 before lb-10), and everything derived from that order."""

from __future__ import annotations

from deploykit.inventory.names import natural_key
from deploykit.plan import plan_placement
from deploykit.services.lb.placement import lb_sites
from deploykit.services.ports import addresses


def test_numbers_in_names_compare_as_numbers() -> None:
    names = ["lb-10", "lb-2", "lb-1", "fra10-web-1", "fra2-web-1", "app-01", "app-1", "lb-2b"]
    assert sorted(names, key=natural_key) == ["app-01", "app-1", "fra2-web-1", "fra10-web-1", "lb-1", "lb-2",
                                              "lb-2b", "lb-10"]


def test_inventory_hosts_and_vrrp_priorities_follow_natural_order(load_text, make_inventory) -> None:
    hosts = {"fra1-lb-[1:12]": "{address: 10.1.0.11, site: fra1, roles: [lb, app]}",
             "fra1-data-[1:3]": "{address: 10.1.0.101, site: fra1, roles: [db, etcd, cache]}"}
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.250}"},
                                   failure_domains="[host]"))
    lbs = [h.name for h in inv.with_role("lb")]
    assert lbs == [f"fra1-lb-{i}" for i in range(1, 13)]
    (site,) = lb_sites(plan_placement(inv))
    priorities = {m.name: m.priority for m in site.members}
    assert priorities["fra1-lb-2"] > priorities["fra1-lb-10"] > priorities["fra1-lb-11"]
    assert [str(a) for a in addresses(inv, "lb")][:3] == ["10.1.0.11", "10.1.0.12", "10.1.0.13"]


def test_the_apps_sentinels_and_the_drain_list_follow_natural_order(load_text, make_inventory) -> None:
    from deploykit.secret import Secret
    from deploykit.services.app.config import app_config
    from deploykit.services.contract import ConfigContext
    from deploykit.services.lb import SERVICE as LB

    hosts = {"fra1-lb-[1:12]": "{address: 10.1.0.11, site: fra1, roles: [lb, app]}",
             "fra1-data-[1:11]": "{address: 10.1.0.101, site: fra1, roles: [db, etcd, cache]}"}
    inv = load_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner, vip: 10.1.0.250}"},
                                   failure_domains="[host]"))
    placement = plan_placement(inv)
    ctx = ConfigContext(inv, placement, lambda name: Secret(name, "x" * 20))
    sentinels = app_config(ctx, inv.host("fra1-lb-1")).sentinels
    mesh = {f"{h.mesh_address}:26379": h.name for h in inv.hosts}
    assert [mesh[s] for s in sentinels][:3] == ["fra1-data-1", "fra1-data-2", "fra1-data-3"]
    drained = LB.drain(placement, "app", ["fra1-lb-1"], frozenset())
    assert list(drained)[:3] == ["fra1-lb-1", "fra1-lb-2", "fra1-lb-3"]
