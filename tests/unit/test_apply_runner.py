"""The apply workflow (`deploykit.apply.runner`) against a fake executor (issue 8): which hosts get which steps,
in which order, and when the apply stops. Plans are the lab's, as `plan` would make them for fresh servers.

The drain and put-back commands themselves run at the end with a real `sh` against a fake `socat`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_executor import ERROR, FakeExecutor, online_plan

from deploykit.apply.phases import desired_states
from deploykit.apply.planner import OnlinePlan
from deploykit.apply.runner import ApplyResult, PhaseResult, apply_plan, batches
from deploykit.execute.diff import HostPlan, RoleChanges
from deploykit.execute.probe import HostFacts
from deploykit.execute.steps import role_steps
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import Placement, plan_placement
from deploykit.plan.desired import RoleState
from deploykit.secret import Secret
from deploykit.services.lb import traffic

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"
DATA = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")
WEB = ("ams1-web-1", "ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2")  # lb, app, worker
ALL = tuple(sorted(DATA + WEB))
BACKUP = ("ams1-web-2", "fra1-web-2")  # pgBackRest repositories (web hosts); the db members run backup too
RELEASE = "once per deploy: systemctl start chirp-release.service"  # the app's run-once step
ETCD_DOWN = ("etcd: without fra1-data-1, rbx1-data-1 loses etcd quorum: 1 of 3 members left, "
             "a majority needs 2")


@dataclass(frozen=True)
class Lab:
    inv: Inventory
    placement: Placement
    states: dict[str, list[RoleState]]

    def plan(self, *, fresh_app: bool = False, **kwargs: Any) -> OnlinePlan:
        """Fresh servers, except that the app hosts already serve (their app units run: a rolling release
        drains them) unless `fresh_app` (a first deploy of the app: nothing to drain)."""
        if not fresh_app and "facts" not in kwargs:
            kwargs["facts"] = {h: HostFacts(units={u.name: ("enabled", "active") for s in states
                                                   if s.role == "app" for u in s.services})
                               for h, states in self.states.items()}
        return online_plan(self.inv, self.states, **kwargs)

    def apply(self, fake: FakeExecutor, plan: OnlinePlan | None = None, **kwargs: Any) -> ApplyResult:
        return apply_plan(plan or self.plan(), fake, self.placement, on_phase=fake.on_phase, **kwargs)


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t" + name.replace("-", ""))


def lab_of(path: Path) -> Lab:
    inv = load_inventory(path)
    placement = plan_placement(inv)
    return Lab(inv, placement, desired_states(inv, placement, secret))


@pytest.fixture(scope="module")
def lab() -> Lab:
    return lab_of(LAB)


@pytest.fixture
def lab_variant(tmp_path: Path) -> Callable[..., Lab]:
    """The lab with another app batch size, or with its workers on hosts of their own (then the worker phase
    has changes: on the lab, a web host's app state holds its worker's)."""

    def make(batch_size: int = 1, separate_workers: bool = False) -> Lab:
        text = LAB.read_text().replace("min_capacity: 0.5}", f"min_capacity: 0.5, batch_size: {batch_size}}}")
        if separate_workers:
            text = text.replace("x-web: &web [lb, app, worker]", "x-web: &web [lb, app]")
            text = text.replace("hosts:\n", "hosts:\n" + "".join(
                f"  {site}-work-1: {{address: 10.77.{i}.31, site: {site}, roles: [worker]}}\n"
                for i, site in enumerate(("fra1", "rbx1", "ams1"), 1)))
        path = tmp_path / "lab.yml"
        path.write_text(text)
        return lab_of(path)

    return make


def rolling(batch_list: list[list[str]], lbs: tuple[str, ...] = WEB) -> list[tuple[str, str, tuple[str, ...]]]:
    """The app phase's calls for these batches when every one goes well."""
    out = []
    for batch in batch_list:
        out += [("app", "drain", lbs), ("app", "change", tuple(batch)), ("app", "undrain", lbs)]
    return out


def with_once(plan: OnlinePlan, role: str, command: str) -> OnlinePlan:
    """The plan with a run-once command on `role` (the lab has one on the app only)."""
    for hp in plan.hosts.values():
        hp.roles = [dataclasses.replace(rc, once=command) if rc.role == role else rc for rc in hp.roles]
    return plan


def reversed_hosts(plan: OnlinePlan) -> OnlinePlan:
    """The plan with its hosts in reverse name order: what is "by name" must not depend on the plan's order."""
    plan.hosts = dict(reversed(plan.hosts.items()))
    return plan


def recap(result: ApplyResult) -> dict[str, tuple[str, str]]:
    return {n: (r.status, r.error) for n, r in result.recap.items()}


# --- the whole lab, nothing failing -------------------------------------------------------------------------

def test_a_first_apply_runs_every_phase_in_order_each_as_its_rollout_says(lab: Lab) -> None:
    fake = FakeExecutor()
    done: list[PhaseResult] = []
    result = lab.apply(fake, on_phase_done=done.append)
    assert fake.briefs() == [
        ("base", "change", ALL),
        ("mesh", "change", ALL),
        ("etcd", "change", DATA),
        ("db", "change", DATA),
        # one host at a time (nobody leads yet, so no host goes last)
        ("pooler", "change", ("ams1-data-1",)), ("pooler", "change", ("fra1-data-1",)),
        ("pooler", "change", ("rbx1-data-1",)),
        ("backup", "change", DATA), ("backup", "change", BACKUP),  # members first, then the repositories
        ("cache", "change", ("ams1-data-1",)), ("cache", "change", ("fra1-data-1",)),
        ("cache", "change", ("rbx1-data-1",)),
        ("lb", "change", WEB),
        *rolling([[h] for h in WEB]),
        ("dns", "change", ("ams1-data-1",)), ("dns", "change", ("fra1-data-1",)), ("dns", "change", ("rbx1-data-1",)),
    ]  # no worker phase: on the lab a web host's app state holds its worker's
    assert [(p.role, p.hosts, p.failed) for p in done] == [
        ("base", 9, []), ("mesh", 9, []), ("etcd", 3, []), ("db", 3, []), ("pooler", 3, []), ("backup", 5, []),
        ("cache", 3, []), ("lb", 6, []), ("app", 6, []), ("dns", 3, [])]
    assert result.phases == done
    assert result.ok and not result.aborted and result.degraded == []
    assert {r.status for r in result.recap.values()} == {"changed"}
    assert result.recap["fra1-web-1"].changes == lab.plan().hosts["fra1-web-1"].count() > 0


def test_every_step_of_the_plan_is_sent_once_in_phase_order(lab: Lab) -> None:
    fake = FakeExecutor()
    plan = lab.plan()
    lab.apply(fake, plan)
    for host in ("fra1-data-1", "rbx1-web-2"):
        expected = [s for rc in plan.hosts[host].roles if not rc.empty
                    for s in role_steps(rc, run_once=False)]
        sent = [s for c in fake.calls if c.kind == "change" and host in c.steps for s in c.steps[host]]
        assert sent == expected
    base = fake.in_phase("base")[0].descriptions("fra1-data-1")
    assert base[0] == "install nftables, netbase, openssh-server, procps"
    assert base.index("upload /etc/nftables.conf") + 1 == base.index("check and install /etc/nftables.conf")


def test_on_step_reports_each_step_done_of_the_phases_not_the_load_balancer_commands(lab: Lab) -> None:
    fake = FakeExecutor()
    seen: list[tuple[str, str]] = []
    lab.apply(fake, on_step=lambda host, step: seen.append((host, step)))
    assert seen == [(h, d) for h, d in fake.done if not d.startswith(("drain ", "put "))]
    assert ("ams1-web-1", RELEASE) in seen


def test_nothing_to_change_sends_nothing(lab: Lab) -> None:
    plan = lab.plan()
    for name, hp in plan.hosts.items():
        plan.hosts[name] = HostPlan(name, [RoleChanges(rc.role) for rc in hp.roles], hp.fingerprint,
                                    hp.desired_hash)
    fake = FakeExecutor()
    result = lab.apply(fake, plan)
    assert fake.calls == [] and result.phases == []
    assert result.ok and {r.status for r in result.recap.values()} == {"ok"}


# --- 1. tier minimums at plan time ----------------------------------------------------------------------------

def test_two_unreachable_etcd_hosts_abort_before_any_step(lab: Lab) -> None:
    plan = lab.plan(unreachable={"fra1-data-1": "unreachable: timed out", "rbx1-data-1": "unreachable: timed out"})
    fake = FakeExecutor()
    result = lab.apply(fake, plan)
    assert result.aborted == f"not applying: {ETCD_DOWN}"
    assert fake.calls == [] and result.phases == []
    assert not result.ok
    assert result.recap["fra1-data-1"].status == "unreachable"
    assert result.recap["fra1-data-1"].error == "unreachable: timed out"
    # nothing ran: the hosts that were to change are reported skipped, not changed
    assert {result.recap[n].status for n in ALL if n not in ("fra1-data-1", "rbx1-data-1")} == {"skipped"}


def test_a_host_whose_probe_failed_counts_as_lost_too(lab: Lab) -> None:
    plan = lab.plan(unreachable={"fra1-data-1": "unreachable: timed out"},
                    probe_failed={"rbx1-data-1": "the probe command failed"})
    fake = FakeExecutor()
    result = lab.apply(fake, plan)
    assert result.aborted == f"not applying: {ETCD_DOWN}"
    assert fake.calls == []
    assert recap(result)["rbx1-data-1"] == ("failed", "the probe command failed")


def test_one_unreachable_data_host_goes_on_without_it(lab: Lab) -> None:
    fake = FakeExecutor()
    result = lab.apply(fake, lab.plan(unreachable={"fra1-data-1": "unreachable: timed out"}))
    assert not result.aborted
    assert "fra1-data-1" not in fake.hosts_sent()
    assert fake.briefs()[:11] == [
        ("base", "change", tuple(h for h in ALL if h != "fra1-data-1")),
        ("mesh", "change", tuple(h for h in ALL if h != "fra1-data-1")),
        ("etcd", "change", ("ams1-data-1", "rbx1-data-1")),
        ("db", "change", ("ams1-data-1", "rbx1-data-1")),
        ("pooler", "change", ("ams1-data-1",)), ("pooler", "change", ("rbx1-data-1",)),
        ("backup", "change", ("ams1-data-1", "rbx1-data-1")), ("backup", "change", BACKUP),
        ("cache", "change", ("ams1-data-1",)), ("cache", "change", ("rbx1-data-1",)),
        ("lb", "change", WEB),
    ]
    assert fake.phases() == ["base", "mesh", "etcd", "db", "pooler", "backup", "cache", "lb", "app", "dns"]
    assert not result.ok  # an unreachable host is not a success
    assert recap(result)["fra1-data-1"] == ("unreachable", "unreachable: timed out")


def test_an_unreachable_load_balancer_is_never_sent_a_drain(lab: Lab) -> None:
    fake = FakeExecutor()
    result = lab.apply(fake, lab.plan(unreachable={"fra1-web-1": "unreachable: timed out"}))
    assert not result.aborted
    assert "fra1-web-1" not in fake.hosts_sent()
    lbs = tuple(h for h in WEB if h != "fra1-web-1")
    assert fake.in_phase("app") and [c.brief() for c in fake.in_phase("app")] == rolling([[h] for h in lbs], lbs)


# --- 2. a tier going down during the apply ----------------------------------------------------------------------

def test_hosts_failing_a_phase_that_takes_its_tier_down_stop_the_apply_after_that_phase(lab: Lab) -> None:
    fake = FakeExecutor().fail("fra1-data-1", phase="etcd").fail("rbx1-data-1", phase="etcd")
    result = lab.apply(fake)
    assert result.aborted == f"stopped after phase etcd: {ETCD_DOWN}"
    assert fake.briefs() == [("base", "change", ALL), ("mesh", "change", ALL), ("etcd", "change", DATA)]
    assert [(p.role, p.failed) for p in result.phases] == [("base", []), ("mesh", []),
                                                           ("etcd", ["fra1-data-1", "rbx1-data-1"])]
    assert recap(result)["fra1-data-1"] == ("failed", f"[etcd] install etcd-server, etcd-client: {ERROR}")
    assert result.recap["ams1-data-1"].status == "changed"
    assert not result.ok


def test_a_host_failing_an_early_phase_counts_against_every_later_tier(lab: Lab) -> None:
    """base has no tier of its own: two data hosts failing it leave etcd without quorum."""
    fake = FakeExecutor().fail("fra1-data-1", "nftables", phase="base").fail("rbx1-data-1", "sshd_config", phase="base")
    result = lab.apply(fake)
    assert result.aborted == f"stopped after phase base: {ETCD_DOWN}"
    assert fake.phases() == ["base"]
    assert recap(result)["rbx1-data-1"] == (
        "failed", f"[base] upload /etc/ssh/sshd_config.d/05-deploykit.conf: {ERROR}")


def test_one_at_a_time_stops_at_the_first_failed_host(lab: Lab) -> None:
    """A change that broke one Redis is not taken to the next: the phase stops, the host after it keeps what it
    ran (skipped, not failed: the cache tier still counts it), and so does the apply."""
    fake = FakeExecutor().fail("fra1-data-1", phase="cache")
    result = lab.apply(fake)
    assert fake.phases() == ["base", "mesh", "etcd", "db", "pooler", "backup", "cache"]
    assert [c.hosts for c in fake.in_phase("cache")] == [["ams1-data-1"], ["fra1-data-1"]]
    assert recap(result)["rbx1-data-1"] == ("skipped", "[cache] not updated: fra1-data-1 failed first (one host "
                                                       "at a time)")
    assert result.aborted == ("stopped after phase cache: its rollout stopped, 1 host(s) not updated: "
                              "fra1-data-1 failed first (one host at a time)")
    assert result.phases[-1].failed == ["fra1-data-1"]
    assert not result.ok


def test_load_balancers_failing_their_phase_go_on_and_are_left_out_of_the_rollout(lab: Lab) -> None:
    """Both of fra1's load balancers fail: fra1's VIP is gone but the other sites serve (lb is up), so the
    app phase runs; they are not drained from (their HAProxy is broken) and get no app change (an app host
    relies on its earlier phases)."""
    fake = FakeExecutor().fail("fra1-web-1", phase="lb").fail("fra1-web-2", "haproxy.cfg", phase="lb")
    result = lab.apply(fake)
    assert not result.aborted
    rest = ("ams1-web-1", "ams1-web-2", "rbx1-web-1", "rbx1-web-2")
    assert [c.brief() for c in fake.in_phase("app")] == rolling([[h] for h in rest], rest)
    assert recap(result)["fra1-web-2"] == ("failed", f"[lb] upload /etc/haproxy/haproxy.cfg: {ERROR}")
    assert result.degraded == []  # 4 of 6 app hosts: above min_capacity


def test_a_host_that_failed_a_phase_gets_no_later_phase(lab: Lab) -> None:
    fake = FakeExecutor().fail("rbx1-data-1", phase="base")
    result = lab.apply(fake)
    assert not result.aborted  # etcd keeps quorum with two members
    assert fake.briefs()[2:4] == [("etcd", "change", ("ams1-data-1", "fra1-data-1")),
                                  ("db", "change", ("ams1-data-1", "fra1-data-1"))]
    assert [c.phase for c in fake.calls if "rbx1-data-1" in c.steps] == ["base"]
    assert recap(result)["rbx1-data-1"] == (
        "failed", f"[base] install nftables, netbase, openssh-server, procps: {ERROR}")


def test_hosts_of_phases_that_never_ran_are_reported_skipped(lab: Lab) -> None:
    fake = FakeExecutor().fail("fra1-data-1", phase="base").fail("rbx1-data-1", phase="base")
    result = lab.apply(fake)
    assert result.aborted.startswith("stopped after phase base: ")
    # every host got its base phase, so each changed (or failed); none was left untouched
    assert {n: r.status for n, r in result.recap.items()} == {
        n: "failed" if n in ("fra1-data-1", "rbx1-data-1") else "changed" for n in ALL}
    plan = lab.plan()
    for hp in plan.hosts.values():  # the same stop when only the data hosts had base changes
        if hp.host in WEB:
            hp.roles = [rc if rc.role != "base" else RoleChanges("base") for rc in hp.roles]
    result = lab.apply(FakeExecutor().fail("fra1-data-1", phase="base").fail("rbx1-data-1", phase="base"), plan)
    assert {result.recap[n].status for n in WEB} == {"skipped"}
    assert result.recap["ams1-data-1"].status == "changed"


# --- 3. rolling release --------------------------------------------------------------------------------------

def test_batches_are_a_canary_then_batch_size_hosts_by_name() -> None:
    assert batches(["e", "b", "a", "d", "c"], 2) == [["a"], ["b", "c"], ["d", "e"]]
    assert batches(["b", "a", "c"], 5) == [["a"], ["b", "c"]]
    assert batches(["b", "a"], 0) == [["a"], ["b"]]
    assert batches([], 3) == []


def test_a_rolling_release_drains_changes_and_puts_back_a_batch_at_a_time(lab_variant: Callable[..., Lab]) -> None:
    lab = lab_variant(batch_size=2)
    fake = FakeExecutor()
    result = lab.apply(fake, reversed_hosts(lab.plan()))
    expected = [["ams1-web-1"], ["ams1-web-2", "fra1-web-1"], ["fra1-web-2", "rbx1-web-1"], ["rbx1-web-2"]]
    app = fake.in_phase("app")
    assert [c.brief() for c in app] == rolling(expected)
    for batch, (drain, change, undrain) in zip(expected, zip(app[::3], app[1::3], app[2::3], strict=True),
                                               strict=True):
        assert change.hosts == batch
        assert drain.steps == {lb: (traffic.drain("app", batch),) for lb in WEB}
        assert undrain.steps == {lb: (traffic.ready("app", batch),) for lb in WEB}
        assert drain.steps["fra1-web-1"][0].description == f"drain {', '.join(batch)} from HAProxy"
        assert undrain.steps["rbx1-web-2"][0].description == f"put {', '.join(batch)} back into HAProxy"
    # the canary alone runs the release command
    assert [h for c in app for h in c.steps if RELEASE in c.descriptions(h)] == ["ams1-web-1"]
    assert result.ok


def test_a_failed_batch_stops_the_rollout_and_its_failed_hosts_stay_drained(lab_variant: Callable[..., Lab]) -> None:
    lab = lab_variant(batch_size=2)
    fake = FakeExecutor().fail("fra1-web-1", "start chirp", phase="app")
    result = lab.apply(fake)
    app = fake.in_phase("app")
    assert [c.brief() for c in app] == rolling([["ams1-web-1"], ["ams1-web-2", "fra1-web-1"]])
    assert app[-1].steps == {lb: (traffic.ready("app", ["ams1-web-2"]),) for lb in WEB}  # not fra1-web-1
    assert recap(result)["fra1-web-1"] == ("failed", f"[app] restart chirp: {ERROR}")
    for name in ("fra1-web-2", "rbx1-web-1", "rbx1-web-2"):  # not changed: they keep serving the old release
        assert recap(result)[name] == ("skipped", "[app] not updated: an earlier batch of the rolling release failed")
    assert result.recap["ams1-web-2"].status == "changed"
    assert result.phases[-1].failed == ["fra1-web-1"]
    assert result.aborted == ("stopped after phase app: its rollout stopped, 3 host(s) not updated: an earlier "
                              "batch of the rolling release failed")
    assert not result.ok


# --- 4. drains and put-backs the load balancers did not take ---------------------------------------------------

def test_a_failed_drain_stops_the_batch_before_any_change(lab: Lab) -> None:
    fake = FakeExecutor().fail("rbx1-web-2", "drain ams1-web-2", phase="app")
    result = lab.apply(fake)
    app = fake.in_phase("app")
    others = tuple(h for h in WEB if h != "rbx1-web-2")
    assert [c.brief() for c in app] == [*rolling([["ams1-web-1"]]), ("app", "drain", WEB), ("app", "undrain", others)]
    assert app[-1].steps == {lb: (traffic.ready("app", ["ams1-web-2"]),) for lb in others}
    assert [c.kind for c in app if "ams1-web-2" in c.steps] == ["drain", "undrain", "drain", "undrain"]
    assert not any(c.kind == "change" and "ams1-web-2" in c.steps for c in fake.calls if c.phase == "app")
    assert recap(result)["rbx1-web-2"] == (
        "failed", f"[rollout of app] could not drain ams1-web-2: drain ams1-web-2 from HAProxy: {ERROR}")
    for name in ("ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1"):
        assert recap(result)[name] == ("skipped", "[app] not updated: draining it from rbx1-web-2 failed")
    assert result.recap["ams1-web-1"].status == "changed"
    assert not result.ok
    assert result.aborted.startswith("stopped after phase app: its rollout stopped, 5 host(s) not updated")
    assert result.degraded == []  # every app host serves (one the new release, the others the old one)


def test_a_failed_put_back_stops_the_rollout(lab: Lab) -> None:
    fake = FakeExecutor().fail("fra1-web-2", "put ams1-web-1 back", phase="app")
    result = lab.apply(fake)
    assert [c.brief() for c in fake.in_phase("app")] == rolling([["ams1-web-1"]])
    assert recap(result)["fra1-web-2"] == (
        "failed", f"[rollout of app] could not put ams1-web-1 back: put ams1-web-1 back into HAProxy: {ERROR}")
    for name in ("ams1-web-2", "fra1-web-1", "rbx1-web-1", "rbx1-web-2"):
        assert recap(result)[name] == ("skipped", "[app] not updated: putting hosts back into fra1-web-2 failed")
    assert result.recap["ams1-web-1"].status == "changed"
    assert not result.ok


# --- 5. and 6. one at a time, and in parallel -------------------------------------------------------------------

def test_one_at_a_time_runs_each_host_alone_by_name_and_the_run_once_command_on_the_first(lab: Lab) -> None:
    fake = FakeExecutor()
    lab.apply(fake, reversed_hosts(with_once(lab.plan(), "cache", "redis-cli ping")))
    cache = fake.in_phase("cache")
    assert [c.hosts for c in cache] == [["ams1-data-1"], ["fra1-data-1"], ["rbx1-data-1"]]
    assert ["once per deploy: redis-cli ping" in c.descriptions(c.hosts[0]) for c in cache] == [True, False, False]


def test_a_parallel_phase_is_one_call_and_runs_the_run_once_command_on_the_first_host_by_name(lab: Lab) -> None:
    fake = FakeExecutor()
    lab.apply(fake, reversed_hosts(with_once(lab.plan(), "db", "patronictl list")))
    (db,) = fake.in_phase("db")
    assert sorted(db.hosts) == list(DATA)
    assert [h for h in db.hosts if "once per deploy: patronictl list" in db.descriptions(h)] == ["ams1-data-1"]
    (base,) = fake.in_phase("base")
    assert sorted(base.hosts) == list(ALL)


# --- 7. degraded, not down -----------------------------------------------------------------------------------

def test_app_capacity_below_min_capacity_is_degraded_and_the_apply_goes_on(lab_variant: Callable[..., Lab]) -> None:
    """Four of six app hosts unreachable: the resilience report calls that DEGRADED, and so does the apply,
    which deploys the rest (issue 8: the two used to disagree)."""
    lab = lab_variant(separate_workers=True)
    gone = ("fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2")
    fake = FakeExecutor()
    result = lab.apply(fake, lab.plan(unreachable={h: "unreachable: timed out" for h in gone}))
    assert not result.aborted
    assert result.degraded == ["app: 2 of 6 app hosts left (33%), below min_capacity 50%"]
    assert fake.briefs()[-4] == ("worker", "change", ("ams1-work-1", "fra1-work-1", "rbx1-work-1"))
    assert fake.phases()[-3:] == ["app", "worker", "dns"]
    assert not any(h in gone for c in fake.calls for h in c.steps)
    assert not result.ok  # the unreachable hosts are not deployed


def test_a_failed_canary_stops_the_apply_before_the_workers(lab_variant: Callable[..., Lab]) -> None:
    """The release failed on its first host: the other app hosts keep the old one and the workers do not get
    the new one."""
    lab = lab_variant(separate_workers=True)
    fake = FakeExecutor().fail("ams1-web-1", "chirp-release", phase="app")
    result = lab.apply(fake)
    assert result.aborted == ("stopped after phase app: its rollout stopped, 5 host(s) not updated: an earlier "
                              "batch of the rolling release failed")
    assert [c.brief() for c in fake.in_phase("app")] == [
        ("app", "drain", WEB), ("app", "change", ("ams1-web-1",))]  # a failed host is not put back
    assert "worker" not in fake.phases()


# --- 9. the drain commands, run by a real sh against a fake socat ------------------------------------------------

FAKE_SOCAT = r"""#!/bin/sh
# socat talking to HAProxy's admin socket: records what it was sent, answers from files beside it
dir=$(dirname "$0")
cmd=$(cat)
printf '%s|%s\n' "$*" "$cmd" >> "$dir/asked"
if [ "$cmd" = "show stat" ]; then
    n=$(cat "$dir/busy_rounds" 2>/dev/null || echo 0)
    sessions=0
    if [ "$n" -gt 0 ]; then echo $((n - 1)) > "$dir/busy_rounds"; sessions=3; fi
    echo "# pxname,svname,qcur,qmax,scur,smax"
    echo "app,fra1-web-1,0,0,$sessions,5"
    echo "app,rbx1-web-1,0,0,9,9"
    echo "db-primary,fra1-web-1,0,0,7,7"
    exit 0
fi
[ -f "$dir/stderr" ] && cat "$dir/stderr" >&2
[ -f "$dir/answer" ] && cat "$dir/answer"
exit "$(cat "$dir/rc" 2>/dev/null || echo 0)"
"""
SOCKET_MISSING = ('socat[4242] E connect(5, AF=1 "/run/haproxy/admin.sock", 25): No such file or directory\n')


@dataclass
class Socat:
    dir: Path

    def answer(self, text: str, rc: int = 0, stderr: str = "") -> None:
        (self.dir / "answer").write_text(text)
        (self.dir / "rc").write_text(str(rc))
        (self.dir / "stderr").write_text(stderr)

    def busy_for(self, rounds: int) -> None:
        (self.dir / "busy_rounds").write_text(str(rounds))

    def asked(self) -> list[str]:
        path = self.dir / "asked"
        return path.read_text().splitlines() if path.exists() else []

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PATH": f"{self.dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def socat(tmp_path: Path) -> Socat:
    fake = tmp_path / "socat"
    fake.write_text(FAKE_SOCAT)
    fake.chmod(0o755)
    s = Socat(tmp_path)
    s.answer("")
    return s


SOCK = f"stdio {traffic.ADMIN_SOCKET}"


@pytest.mark.parametrize("answer", ["", "\n", "\n\n"])
def test_an_empty_answer_is_success(socat: Socat, answer: str) -> None:
    socat.answer(answer)
    t0 = time.monotonic()
    r = socat.run(traffic.drain("app", ["fra1-web-1"]).command)
    assert (r.returncode, r.stderr) == (0, "")
    assert socat.asked() == [f"{SOCK}|set server app/fra1-web-1 state drain", f"{SOCK}|show stat"]
    assert time.monotonic() - t0 < traffic.DRAIN_GRACE_S / 2  # nothing of its own was busy: no waiting
    r = socat.run(traffic.ready("app", ["fra1-web-1", "rbx1-web-1"]).command)
    assert (r.returncode, r.stderr) == (0, "")
    assert socat.asked()[2:] == [f"{SOCK}|set server app/fra1-web-1 state ready",
                                 f"{SOCK}|set server app/rbx1-web-1 state ready"]


def test_haproxy_refusing_the_command_fails_with_its_answer_and_no_wait_hides_it(socat: Socat) -> None:
    socat.answer("No such server.\n\n")
    r = socat.run(traffic.drain("app", ["fra1-web-9", "rbx1-web-1"]).command)
    assert r.returncode != 0
    assert "HAProxy: No such server." in r.stderr
    assert socat.asked() == [f"{SOCK}|set server app/fra1-web-9 state drain"]  # neither the next one nor the wait
    r = socat.run(traffic.ready("app", ["fra1-web-9"]).command)
    assert r.returncode != 0 and "HAProxy: No such server." in r.stderr


def test_socat_failing_fails_the_command(socat: Socat) -> None:
    socat.answer("", rc=1, stderr=SOCKET_MISSING)
    for step in (traffic.drain("app", ["fra1-web-1"]), traffic.ready("app", ["fra1-web-1"])):
        r = socat.run(step.command)
        assert r.returncode != 0, step.description
        assert "No such file or directory" in r.stderr
    assert all("show stat" not in line for line in socat.asked())


def test_a_drain_waits_for_the_servers_open_sessions_only(socat: Socat) -> None:
    """fra1-web-1 has sessions for three more looks; rbx1-web-1 (not drained) and another backend's
    fra1-web-1 stay busy and must not be waited for."""
    socat.busy_for(3)
    r = socat.run(traffic.drain("app", ["fra1-web-1"]).command)
    assert (r.returncode, r.stderr) == (0, "")
    assert socat.asked().count(f"{SOCK}|show stat") == 4


def test_a_drain_gives_up_waiting_after_the_grace_period_but_still_succeeds(
        socat: Socat, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "DRAIN_GRACE_S", 2)  # whole seconds of `date +%s`: 1 to 2 s of waiting
    socat.busy_for(10_000)
    t0 = time.monotonic()
    r = socat.run(traffic.drain("app", ["fra1-web-1"]).command)
    assert (r.returncode, r.stderr) == (0, "")
    assert 0.9 < time.monotonic() - t0 < 6
    assert socat.asked().count(f"{SOCK}|show stat") >= 3


# --- a first deploy is parallel (issue 14) ---------------------------------------------------------------------

def test_a_first_deploy_of_the_app_is_the_canary_then_every_other_host_at_once_undrained(lab: Lab) -> None:
    """No app host serves yet: nothing to drain, no capacity to lose; the canary alone still runs the release
    command (migrations) before the others start."""
    fake = FakeExecutor()
    result = lab.apply(fake, reversed_hosts(lab.plan(fresh_app=True)))
    app = fake.in_phase("app")
    assert [c.brief() for c in app] == [("app", "change", ("ams1-web-1",)),
                                        ("app", "change", ("ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1",
                                                           "rbx1-web-2"))]
    assert [h for c in app for h in c.steps if RELEASE in c.descriptions(h)] == ["ams1-web-1"]
    assert result.ok


def test_new_hosts_join_at_once_while_serving_ones_roll_drained(lab: Lab) -> None:
    """Two app hosts are new (their units do not run), four serve: the canary (serving: drained), then the new
    ones at once, then the serving ones a batch at a time (25% of 6 app hosts: 1)."""
    plan = lab.plan()
    for name in ("fra1-web-2", "rbx1-web-1"):
        fresh = lab.plan(fresh_app=True).hosts[name]
        plan.hosts[name] = fresh
    fake = FakeExecutor()
    assert lab.apply(fake, plan).ok
    app = fake.in_phase("app")
    assert [c.brief() for c in app] == [
        *rolling([["ams1-web-1"]]), ("app", "change", ("fra1-web-2", "rbx1-web-1")),
        *rolling([["ams1-web-2"], ["fra1-web-1"], ["rbx1-web-2"]])]


def test_a_failed_new_host_stops_the_rollout_before_serving_hosts_are_drained(lab: Lab) -> None:
    fake = FakeExecutor().fail("fra1-web-2", "wait: chirp answers", phase="app")
    result = lab.apply(fake, lab.plan(fresh_app=True))
    assert [c.kind for c in fake.in_phase("app")] == ["change", "change"]
    assert recap(result)["fra1-web-2"][0] == "failed"
    assert not result.ok


@pytest.mark.parametrize(("batch", "hosts", "expected"), [
    ("25%", 6, 1), ("25%", 42, 10), ("25%", 3, 1), ("100%", 7, 7), ("10%", 400, 40), (3, 42, 3), (1, 6, 1)])
def test_batch_size_is_a_count_or_a_percentage_of_the_app_hosts(batch: int | str, hosts: int, expected: int) -> None:
    from deploykit.inventory.model import AppService

    assert AppService(batch_size=batch).batch_count(hosts) == expected
