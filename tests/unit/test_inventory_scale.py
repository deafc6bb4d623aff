"""Checking an inventory scales linearly with its hosts, and leaves the garbage collector as it found it.

The collector's full collections walk every live object; building a model of thousands of hosts would trigger
them over and over (quadratic in effect), so the check runs with the collector paused: it makes no cycles.
"""

from __future__ import annotations

import gc

import pytest

from deploykit.inventory import check_inventory

F = "inventory.yml"


def _many_hosts(n: int) -> str:
    lines = ["version: 1", "name: many", "domain: many.test", "failure_domains: [site, rack]", "sites:",
             "  fra1: {provider: hetzner, vip: 10.1.0.250}", "hosts:",
             "  fra1-db-1: {address: 10.1.0.1, site: fra1, rack: r1, roles: [db, etcd, cache]}"]
    lines += [f"  fra1-app-{i}: {{address: 10.{2 + i // 200}.0.{1 + i % 200}, site: fra1, rack: r{i % 4}, "
              "roles: [app, worker]}" for i in range(n)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_state_is_restored(write_inventory, enabled: bool) -> None:
    write_inventory(_many_hosts(50))
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        inv, problems = check_inventory(F)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert inv is not None and len(inv.hosts) == 51, [p.render() for p in problems]


def test_collector_is_restored_when_the_check_fails(write_inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykit.inventory import load

    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    write_inventory(_many_hosts(1))
    monkeypatch.setattr(load, "build", boom)
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        check_inventory(F)
    assert gc.isenabled()


def test_no_full_collection_while_checking_thousands_of_hosts(write_inventory) -> None:
    write_inventory(_many_hosts(3000))
    full = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(info)

    gc.callbacks.append(watch)
    try:
        inv, problems = check_inventory(F)
    finally:
        gc.callbacks.remove(watch)
    assert inv is not None, [p.render() for p in problems][:3]
    assert full == []
