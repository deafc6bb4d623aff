"""Apply a plan phase by phase; stop when a tier would fall below what the placement needs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deploykit.apply import rolling
from deploykit.apply.phases import PHASE_NAMES
from deploykit.apply.planner import OnlinePlan
from deploykit.execute import executor
from deploykit.execute.diff import RoleChanges
from deploykit.execute.steps import role_steps
from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement

ONE_AT_A_TIME = ("cache",)  # phases whose hosts change one after the other, each waited for
APP_BACKEND = "app"  # HAProxy backend of the app frontend (placement's Frontend name)


@dataclass
class HostRecap:
    status: str = "ok"  # ok | changed | failed | unreachable | skipped
    changes: int = 0
    error: str = ""


@dataclass
class PhaseResult:
    role: str
    hosts: int
    seconds: float
    failed: list[str]


@dataclass
class ApplyResult:
    recap: dict[str, HostRecap] = field(default_factory=dict)
    phases: list[PhaseResult] = field(default_factory=list)
    aborted: str = ""

    @property
    def ok(self) -> bool:
        return not self.aborted and all(r.status in ("ok", "changed") for r in self.recap.values())


def tier_minimum(inv: Inventory, placement: Placement, role: str) -> int:
    """How many members of a tier must be healthy for the stack to work."""
    members = len(inv.with_role(role))
    if role == "etcd":
        return placement.etcd.quorum
    if role == "cache":
        return min(members, len(placement.cache.sentinels) // 2 + 1)
    if role == "app":
        return max(1, math.ceil(members * inv.services.app.min_capacity))
    if role in ("db", "lb", "worker"):
        return 1 if members else 0
    return 0


def shortfall(inv: Inventory, placement: Placement, lost: set[str], from_role: str = "etcd") -> str:
    """'' if every tier (from `from_role` on, in phase order) keeps its minimum without the `lost` hosts,
    else which tier falls short. Tiers already applied keep running on a host that failed a later phase."""
    for role in PHASE_NAMES[max(1, PHASE_NAMES.index(from_role)):]:
        members = [h.name for h in inv.with_role(role)]
        if not members:
            continue
        alive = [m for m in members if m not in lost]
        need = tier_minimum(inv, placement, role)
        if len(alive) < need:
            gone = ", ".join(sorted(set(members) - set(alive)))
            return f"{role}: {len(alive)} of {len(members)} members usable, needs {need} (lost: {gone})"
    return ""


def apply_plan(plan: OnlinePlan, session: executor.Session, placement: Placement,
               on_phase: Callable[[str, int], None] | None = None,
               on_phase_done: Callable[[PhaseResult], None] | None = None,
               on_step: Callable[[str, str], None] | None = None) -> ApplyResult:
    inv = plan.inv
    result = ApplyResult()
    for name, err in plan.unreachable.items():
        result.recap[name] = HostRecap("unreachable", error=err)
    for name, err in plan.probe_failed.items():
        result.recap[name] = HostRecap("failed", error=err)
    for name, hp in plan.hosts.items():
        result.recap[name] = HostRecap("changed" if hp.changed else "ok", hp.count())
    lost = set(plan.unreachable) | set(plan.probe_failed)
    short = shortfall(inv, placement, lost)
    if short:
        result.aborted = f"not applying: {short}"
        return result
    for role in PHASE_NAMES:
        changes = {name: rc for name, hp in plan.hosts.items() if name not in lost
                   for rc in hp.roles if rc.role == role and not rc.empty}
        if not changes:
            continue
        if on_phase:
            on_phase(role, len(changes))
        t0 = time.monotonic()
        if role == "app":
            outcomes = _rolling_app(inv, placement, session, changes, lost, on_step)
        elif role in ONE_AT_A_TIME:
            outcomes = {}
            for n in sorted(changes):  # a restart of every Redis at once would be an outage (and a failover)
                outcomes.update(executor.run_steps(session, {n: role_steps(changes[n], run_once=not outcomes)},
                                                   on_step=on_step))
        else:
            once_host = min(changes)
            steps = {n: role_steps(rc, run_once=n == once_host) for n, rc in changes.items()}
            outcomes = executor.run_steps(session, steps, on_step=on_step)
        failed = sorted(n for n, o in outcomes.items() if not o.ok)
        for n in failed:
            result.recap[n].status = "failed"
            result.recap[n].error = f"[{role}] {outcomes[n].error}"
        lost.update(failed)
        phase = PhaseResult(role, len(changes), time.monotonic() - t0, failed)
        result.phases.append(phase)
        if on_phase_done:
            on_phase_done(phase)
        short = shortfall(inv, placement, lost, from_role=role)
        if short:
            result.aborted = f"stopped after phase {role}: {short}"
            break
    return result


def _rolling_app(inv: Inventory, placement: Placement, session: executor.Session, changes: dict[str, RoleChanges],
                 lost: set[str], on_step: Callable[[str, str], None] | None) -> dict[str, executor.HostOutcome]:
    """App hosts a batch at a time: drain from every HAProxy, change, wait healthy, put back.

    The first batch is one host, where the release command (migrations) runs; a failed batch stops the
    rollout, so a bad release never reaches more than one batch.
    """
    lbs = sorted(m.name for s in placement.sites for m in s.members if m.name not in lost)
    outcomes: dict[str, executor.HostOutcome] = {}
    for i, batch in enumerate(rolling.batches(list(changes), inv.services.app.batch_size)):
        if lbs:
            executor.run_steps(session, {lb: [rolling.drain(APP_BACKEND, batch)] for lb in lbs})
        steps = {n: role_steps(changes[n], run_once=i == 0) for n in batch}
        result = executor.run_steps(session, steps, on_step=on_step)
        outcomes.update(result)
        healthy = [n for n in batch if result[n].ok]
        if lbs and healthy:
            executor.run_steps(session, {lb: [rolling.ready(APP_BACKEND, healthy)] for lb in lbs})
        if len(healthy) < len(batch):
            for name in changes:
                if name not in outcomes:
                    outcomes[name] = executor.HostOutcome(False, "not updated: an earlier batch of the rolling "
                                                                 "release failed")
            break
    return outcomes
