from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.apply.runner import shortfall, tier_minimum
from deploykit.apply.selection import LimitError, select_hosts
from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"


@pytest.fixture(scope="module")
def lab():
    inv = load_inventory(LAB)
    return inv, plan_placement(inv)


def test_limit_by_host_role_site_provider(lab):
    inv, _ = lab
    assert [h.name for h in select_hosts(inv, ("fra1-web-1",))] == ["fra1-web-1"]
    assert [h.name for h in select_hosts(inv, ("db",))] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert [h.name for h in select_hosts(inv, ("rbx1",))] == ["rbx1-data-1", "rbx1-web-1", "rbx1-web-2"]
    assert [h.name for h in select_hosts(inv, ("leaseweb,fra1-data-1",))] == [
        "ams1-data-1", "ams1-web-1", "ams1-web-2", "fra1-data-1"]
    assert len(select_hosts(inv, ())) == 9


def test_unknown_limit_suggests(lab):
    inv, _ = lab
    with pytest.raises(LimitError, match="did you mean 'fra1'"):
        select_hosts(inv, ("fra2",))


def test_tier_minimums(lab):
    inv, p = lab
    assert tier_minimum(inv, p, "etcd") == 2
    assert tier_minimum(inv, p, "cache") == 2
    assert tier_minimum(inv, p, "db") == 1
    assert tier_minimum(inv, p, "app") == 3  # 6 app hosts * min_capacity 0.5


def test_shortfall_names_the_tier(lab):
    inv, p = lab
    assert shortfall(inv, p, {"fra1-data-1"}) == ""
    msg = shortfall(inv, p, {"fra1-data-1", "rbx1-data-1"})
    assert msg == "etcd: 1 of 3 members usable, needs 2 (lost: fra1-data-1, rbx1-data-1)"
