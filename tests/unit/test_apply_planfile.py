"""Saved plans (`plan --out FILE`, `apply FILE`): a round trip, and every way a saved plan goes stale (issue 8).

The plans are the lab's, made without connecting (see fake_executor.online_plan); "now" is a second plan made
the same way from other facts."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_executor import online_plan

from deploykit.apply.phases import desired_states
from deploykit.apply.planfile import FORMAT, SavedPlan, StalePlanError, check_current, load_plan, save_plan
from deploykit.apply.planner import OnlinePlan
from deploykit.errors import DeploykitError
from deploykit.execute.probe import FileFact, HostFacts
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import RoleState
from deploykit.secret import Redactor, Secret

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"


@dataclass
class Planned:
    inv: Inventory
    states: dict[str, list[RoleState]]
    secrets: dict[str, Secret]

    def plan(self, **kwargs: Any) -> OnlinePlan:
        return online_plan(self.inv, self.states, redact=Redactor(self.secrets.values()), **kwargs)


def planned(path: Path) -> Planned:
    inv = load_inventory(path)
    secrets: dict[str, Secret] = {}

    def secret(name: str) -> Secret:
        return secrets.setdefault(name, Secret(name, "s3cr3t-value-of-" + name))

    return Planned(inv, desired_states(inv, plan_placement(inv), secret), secrets)


@pytest.fixture
def lab(tmp_path: Path) -> Planned:
    """The lab inventory, copied where a test may edit it."""
    path = tmp_path / "lab.yml"
    path.write_text(LAB.read_text())
    return planned(path)


@pytest.fixture
def saved(lab: Planned, tmp_path: Path) -> SavedPlan:
    path = tmp_path / "plan.json"
    save_plan(lab.plan(), path)
    return load_plan(path)


def stale(saved: SavedPlan, fresh: OnlinePlan) -> str:
    with pytest.raises(StalePlanError) as err:
        check_current(saved, fresh)
    return str(err.value)


def test_a_saved_plan_round_trips_and_a_plan_made_again_is_current(lab: Planned, tmp_path: Path) -> None:
    plan = lab.plan(limit=("fra1",))
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    saved = load_plan(path)
    assert saved.inventory == lab.inv.path
    assert saved.inventory_sha256 == plan.inventory_sha256 and len(saved.inventory_sha256) == 64
    assert saved.limit == ("fra1",)
    assert saved.hosts == {n: {"fingerprint": hp.fingerprint, "desired_hash": hp.desired_hash}
                           for n, hp in plan.hosts.items()}
    assert len(saved.hosts) == 9
    check_current(saved, lab.plan())  # the same plan made again: current
    assert not path.with_name("plan.json.tmp").exists()


def test_a_saved_plan_holds_diffs_but_no_secret(lab: Planned, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    save_plan(lab.plan(), path)
    text = path.read_text()
    data = json.loads(text)
    assert data["format"] == FORMAT
    assert lab.secrets, "the lab asked for no secret"
    assert all(s.reveal() not in text for s in lab.secrets.values())
    assert "<redacted:" in text  # the diffs are there, redacted
    assert data["hosts"]["fra1-web-1"]["status"] == "change"


def test_an_edited_inventory_makes_the_plan_stale(lab: Planned, saved: SavedPlan) -> None:
    lab.inv.path.write_text(lab.inv.path.read_text() + "# an innocent comment\n")
    now = planned(lab.inv.path)
    assert stale(saved, now.plan()) == (f"stale plan: {lab.inv.path} changed since the plan was made; "
                                        "run plan again")


@pytest.mark.parametrize(("unreachable", "probe_failed", "named"), [
    ({"rbx1-web-2": "unreachable: timed out"}, {}, "rbx1-web-2"),
    ({}, {"ams1-data-1": "the probe command failed"}, "ams1-data-1"),
    ({"rbx1-web-2": "unreachable: timed out"}, {"ams1-data-1": "the probe command failed"}, "ams1-data-1, rbx1-web-2"),
])
def test_hosts_unreachable_now_cannot_be_verified(lab: Planned, saved: SavedPlan, unreachable: dict[str, str],
                                                  probe_failed: dict[str, str], named: str) -> None:
    msg = stale(saved, lab.plan(unreachable=unreachable, probe_failed=probe_failed))
    assert msg == f"cannot verify the plan: hosts not reachable now: {named}"


def test_another_set_of_hosts_is_stale_and_named(lab: Planned, saved: SavedPlan) -> None:
    fewer = Planned(lab.inv, {n: s for n, s in lab.states.items() if n != "fra1-data-1"}, lab.secrets)
    assert stale(saved, fewer.plan()) == ("stale plan: the set of hosts differs from the saved plan's "
                                          "(not planned now: fra1-data-1); run plan again")
    more = fewer.plan()
    more.hosts["fra1-data-1"] = lab.plan().hosts["fra1-data-1"]
    more.hosts["fra1-data-2"] = dataclasses.replace(more.hosts["fra1-data-1"], host="fra1-data-2")
    assert "(not in the saved plan: fra1-data-2)" in stale(saved, more)


def test_a_host_whose_state_changed_since_is_stale_and_named(lab: Planned, saved: SavedPlan) -> None:
    """Someone installed a package on fra1-web-1 since: the facts differ, the desired state does not."""
    now = lab.plan(facts={"fra1-web-1": HostFacts(packages={"haproxy": True})})
    assert now.hosts["fra1-web-1"].desired_hash == saved.hosts["fra1-web-1"]["desired_hash"]
    assert stale(saved, now) == ("stale plan: the state of fra1-web-1 changed since the plan was made (someone "
                                 "applied or edited something); run plan again")


def test_a_host_whose_desired_state_changed_since_is_stale_and_named(lab: Planned, saved: SavedPlan) -> None:
    """The same facts, another desired state (e.g. a new app release) on two hosts."""
    states = dict(lab.states)
    for name in ("rbx1-web-1", "ams1-data-1"):
        states[name] = [dataclasses.replace(s, packages=(*s.packages, "htop")) if s.role == "base" else s
                        for s in states[name]]
    now = Planned(lab.inv, states, lab.secrets).plan()
    assert now.hosts["rbx1-web-1"].fingerprint == saved.hosts["rbx1-web-1"]["fingerprint"]
    assert "the state of ams1-data-1, rbx1-web-1 changed since" in stale(saved, now)


def test_a_changed_file_on_a_host_is_stale(lab: Planned, saved: SavedPlan) -> None:
    live = FileFact(0o644, "root", "root", b"edited by hand\n")
    now = lab.plan(facts={"ams1-web-2": HostFacts(files={"/etc/haproxy/haproxy.cfg": live})})
    assert "the state of ams1-web-2 changed since" in stale(saved, now)


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such plan file"),
    (b"", "not a deploykit plan file"),
    (b"this is not json", "not a deploykit plan file"),
    (b"\xff\xfe\x00garbage", "not a deploykit plan file"),
    (b"[1, 2]", "not a deploykit saved plan (expected format deploykit.saved-plan/v1); make one with"),
    (b'{"format": "deploykit.plan/v1", "hosts": {}}', "not a deploykit saved plan"),  # `plan --json`'s output
    (b'{"format": "deploykit.saved-plan/v1"}', "damaged deploykit saved plan (no 'inventory')"),
    (b'{"format": "deploykit.saved-plan/v1", "inventory": "x.yml", "inventory_sha256": "0", "state": '
     b'{"h": {"fingerprint": "1"}}}', "damaged deploykit saved plan (no 'desired_hash')"),
    (b'{"format": "deploykit.saved-plan/v1", "inventory": "x.yml", "inventory_sha256": "0", "state": []}',
     "damaged deploykit saved plan"),
])
def test_loading_anything_but_a_saved_plan_says_what_is_wrong(tmp_path: Path, content: bytes | None,
                                                             expected: str) -> None:
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DeploykitError) as err:
        load_plan(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_a_stale_plan_is_a_deploykit_error() -> None:
    assert issubclass(StalePlanError, DeploykitError)
