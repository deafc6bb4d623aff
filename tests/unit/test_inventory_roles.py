"""The known roles are a parameter of check_inventory/load_inventory (default: the registered services')."""

from __future__ import annotations

import pytest

from deploykit.errors import InventoryError
from deploykit.inventory import check_inventory, load_inventory
from deploykit.services import inventory_roles

ROLES = inventory_roles()

F = "inventory.yml"
EXTRA = (*ROLES, "search")


def test_default_roles_are_the_registered_services_roles(make_inventory, base_hosts, write_inventory) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [search, db, etcd]}"
    write_inventory(make_inventory(hosts=base_hosts))
    inv, problems = check_inventory(F)
    assert inv is None
    assert [p.render() for p in problems] == [
        f"{F}:11: hosts/fra1-data-1/roles/0: unknown role 'search' (expected one of: app, backup, cache, db, dns, "
        "etcd, lb, worker)"
    ]
    assert [p.render() for p in check_inventory(F, roles=None)[1]] == [p.render() for p in problems]


def test_an_extra_role_is_accepted_and_ordered(make_inventory, base_hosts, write_inventory) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [search, cache, db, etcd]}"
    write_inventory(make_inventory(hosts=base_hosts))
    inv, problems = check_inventory(F, roles=EXTRA)
    assert problems == []
    assert inv is not None
    assert inv.host("fra1-data-1").roles == ("db", "etcd", "cache", "search")
    assert load_inventory(F, roles=EXTRA).host("fra1-data-1").roles == ("db", "etcd", "cache", "search")


def test_roles_are_ordered_as_given(make_inventory, write_inventory) -> None:
    write_inventory(make_inventory())
    order = ("search", "cache", "etcd", "db", "worker", "app", "lb")
    inv = load_inventory(F, roles=order)
    assert inv.host("fra1-data-1").roles == ("cache", "etcd", "db")
    assert inv.host("fra1-web-1").roles == ("worker", "app", "lb")


def test_unknown_role_suggests_from_the_given_roles(make_inventory, base_hosts, write_inventory) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [serch, db, etcd, cache]}"
    write_inventory(make_inventory(hosts=base_hosts))
    with pytest.raises(InventoryError) as exc:
        load_inventory(F, roles=EXTRA)
    assert exc.value.lines() == [f"{F}:11: hosts/fra1-data-1/roles/0: unknown role 'serch' (did you mean 'search'?)"]


def test_a_role_left_out_is_unknown(make_inventory, write_inventory) -> None:
    write_inventory(make_inventory())
    _, problems = check_inventory(F, roles=("lb", "app", "db", "etcd", "cache"))
    assert [p.render() for p in problems if p.severity == "error"] == [
        f"{F}:{line}: hosts/{key}/roles/2: unknown role 'worker' (expected one of: app, cache, db, etcd, lb)"
        for line, key in ((10, "fra1-web-[1:2]"), (12, "rbx1-web-[1:2]"), (14, "ams1-web-[1:2]"))
    ]


def test_hosts_without_roles_are_told_the_given_roles(make_inventory, base_hosts, write_inventory) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1}"
    base_hosts["rbx1-web-[1:2]"] = "{address: 10.2.0.11, site: rbx1, roles: ~}"
    write_inventory(make_inventory(hosts=base_hosts))
    _, problems = check_inventory(F, roles=EXTRA)
    errors = [p.render() for p in problems if p.severity == "error"]
    assert f"{F}:10: hosts/fra1-web-[1:2]: this host has no roles; add e.g. roles: [app] (one or more of: " \
           "dns, lb, app, worker, db, etcd, cache, backup, search)" in errors
    assert f"{F}:12: hosts/rbx1-web-[1:2]/roles: this host has no roles; give it at least one of: " \
           "dns, lb, app, worker, db, etcd, cache, backup, search (or roles: [] to retire every role it ran)" in errors
