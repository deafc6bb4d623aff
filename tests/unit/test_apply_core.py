from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.apply.selection import LimitError, select_hosts
from deploykit.apply.tiers import shortfall, tier_verdicts
from deploykit.inventory import load_inventory
from deploykit.plan import Status, plan_placement
from deploykit.services import SERVICES

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


def test_unknown_limit_lists_the_nearest_names_even_when_none_is_close(lab):
    inv, _ = lab
    with pytest.raises(LimitError, match="nearest: ") as err:
        select_hosts(inv, ("zzzz",))
    assert len(str(err.value).split("nearest: ")[1].split(", ")) == 4


def verdicts(lab, lost=(), failed_in=None):
    inv, p = lab
    return tier_verdicts(inv, p, SERVICES, set(lost), failed_in or {})


def test_tiers_with_every_host_are_all_up(lab):
    v = verdicts(lab)
    assert list(v) == ["etcd", "db", "backup", "cache", "lb", "app", "worker", "dns"]
    assert {x.status for x in v.values()} == {Status.UP}
    assert shortfall(v) == ""


def test_losing_one_data_host_keeps_every_tier(lab):
    assert shortfall(verdicts(lab, {"fra1-data-1"})) == ""


def test_shortfall_names_the_tier_and_the_hosts(lab):
    msg = shortfall(verdicts(lab, {"fra1-data-1", "rbx1-data-1"}))
    assert msg == ("etcd: without fra1-data-1, rbx1-data-1 loses etcd quorum: 1 of 3 members left, "
                   "a majority needs 2")


def test_lost_app_capacity_is_degraded_not_an_abort_as_in_the_resilience_report(lab):
    """The resilience report calls app capacity below min_capacity DEGRADED; the apply agrees (issue 8)."""
    app = {"fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2"}  # 2 of 6 left, min_capacity 0.5
    v = verdicts(lab, app)
    assert v["app"].status is Status.DEGRADED
    assert shortfall(v) == ""


def test_a_host_failing_a_later_phase_does_not_count_against_earlier_tiers(lab):
    data = {"fra1-data-1", "rbx1-data-1"}
    assert shortfall(verdicts(lab, failed_in={"lb": data})) == ""  # etcd, db, cache were applied on them
    assert shortfall(verdicts(lab, failed_in={"etcd": data})).startswith("etcd: ")
