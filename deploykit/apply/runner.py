"""Apply a plan phase by phase, each phase's hosts as its service's rollout says; stop as soon as a tier
would go down (the services' own tier rules, see `tiers.py`).

Generic: the runner names no service. It talks to hosts only through a `StepRunner` (the executor's session,
or an in-memory fake in the unit tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from deploykit.apply.planner import OnlinePlan
from deploykit.apply.tiers import degraded, shortfall, tier_verdicts
from deploykit.execute.diff import RoleChanges
from deploykit.execute.steps import HostOutcome, Step, role_steps
from deploykit.inventory.names import natural_key
from deploykit.plan.placement import Placement
from deploykit.services import SERVICES
from deploykit.services.contract import Rollout, Service

OnStep = Callable[[str, str], None]


class StepRunner(Protocol):
    def run(self, steps: dict[str, list[Step]], on_step: OnStep | None = None) -> dict[str, HostOutcome]:
        """Run each host's steps in order, hosts in parallel; a failing step stops that host only."""
        ...


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
    degraded: list[str] = field(default_factory=list)  # tiers still serving, with less than planned

    @property
    def ok(self) -> bool:
        return not self.aborted and all(r.status in ("ok", "changed") for r in self.recap.values())


def batches(hosts: list[str], size: int) -> list[list[str]]:
    """The first host alone (a canary: the run-once command runs there), then `size` at a time, by name."""
    ordered = sorted(hosts, key=natural_key)
    if not ordered:
        return []
    rest, size = ordered[1:], max(1, size)
    return [ordered[:1]] + [rest[i:i + size] for i in range(0, len(rest), size)]


def rollout_groups(changes: dict[str, RoleChanges], size: int) -> list[tuple[list[str], bool]]:
    """The groups a ROLLING rollout changes in turn, each with whether it is drained first: the canary alone
    (the first host by name; it runs the run-once command), then every host not serving yet at once (nothing to
    drain, no capacity lost: a first deploy is parallel), then the serving hosts `size` at a time, drained."""
    ordered = sorted(changes, key=natural_key)
    if not ordered:
        return []
    fresh = [n for n in ordered[1:] if changes[n].not_serving]
    serving = [n for n in ordered[1:] if not changes[n].not_serving]
    groups = [([ordered[0]], not changes[ordered[0]].not_serving)]
    if fresh:
        groups.append((fresh, False))
    # the canary sorts first: what `batches` puts after it are the serving hosts' batches
    groups += [(batch, True) for batch in batches([ordered[0], *serving], size)[1:]]
    return groups


def apply_plan(plan: OnlinePlan, runner: StepRunner, placement: Placement,
               on_phase: Callable[[str, int], None] | None = None,
               on_phase_done: Callable[[PhaseResult], None] | None = None,
               on_step: OnStep | None = None, services: tuple[Service, ...] = SERVICES) -> ApplyResult:
    inv = plan.inv
    result = ApplyResult()
    for name, err in plan.unreachable.items():
        result.recap[name] = HostRecap("unreachable", error=err)
    for name, err in plan.probe_failed.items():
        result.recap[name] = HostRecap("failed", error=err)
    for name, hp in plan.hosts.items():
        result.recap[name] = HostRecap("changed" if hp.changed else "ok", hp.count())
    lost = set(plan.unreachable) | set(plan.probe_failed)
    failed_in: dict[str, set[str]] = {}
    verdicts = tier_verdicts(inv, placement, services, lost, failed_in)
    if short := shortfall(verdicts):
        result.aborted = f"not applying: {short}"
        _not_applied(plan, result, set())
        return result
    touched: set[str] = set()  # hosts sent a phase's steps
    if not _retire(plan, runner, services, result, touched, on_phase, on_phase_done, on_step):
        _not_applied(plan, result, touched)
        return result
    for service in services:
        # A host that failed an earlier phase gets no later one: phases are in dependency order, and the tier
        # rules already count it as lost for this tier and every later one.
        out = lost | _all(failed_in)
        changes = {name: rc for name, hp in plan.hosts.items() if name not in out
                   for rc in hp.roles if rc.role == service.name and not rc.empty and not rc.retiring}
        if not changes:
            continue
        if on_phase:
            on_phase(service.name, len(changes))
        t0 = time.monotonic()
        if service.rollout is Rollout.ROLLING:
            outcomes = _rolling(service, plan, placement, runner, changes, out, result, services, on_step)
        elif service.rollout is Rollout.ONE_AT_A_TIME:
            outcomes = _one_at_a_time(changes, runner, on_step)
        else:
            outcomes = _parallel(changes, runner, on_step)
        touched.update(n for n, o in outcomes.items() if o.attempted)
        failed = sorted(n for n, o in outcomes.items() if not o.ok and o.attempted)
        for n in failed:
            if result.recap[n].status != "failed":  # keep the first error (e.g. a drain's) of a host
                result.recap[n].status = "failed"
                result.recap[n].error = f"[{service.name}] {outcomes[n].error}"
        # Hosts a rollout stopped before are not lost (they serve what they served before): skipped, not failed.
        held = sorted(n for n, o in outcomes.items() if not o.attempted)
        for n in held:
            if result.recap[n].status != "failed":  # e.g. a load balancer that did not drain is also an app host
                result.recap[n].status = "skipped"
                result.recap[n].error = f"[{service.name}] {outcomes[n].error}"
        failed_in.setdefault(service.name, set()).update(failed)
        phase = PhaseResult(service.name, len(changes), time.monotonic() - t0, failed)
        result.phases.append(phase)
        if on_phase_done:
            on_phase_done(phase)
        verdicts = tier_verdicts(inv, placement, services, lost, failed_in)
        if short := shortfall(verdicts):
            result.aborted = f"stopped after phase {service.name}: {short}"
            break
        if held:  # a stopped rollout stops the apply: later phases may depend on what it did not finish
            why = outcomes[held[0]].error
            result.aborted = f"stopped after phase {service.name}: its rollout stopped, {len(held)} host(s) {why}"
            break
    _not_applied(plan, result, touched)
    result.degraded = degraded(verdicts)
    return result


def _one_at_a_time(changes: dict[str, RoleChanges], runner: StepRunner,
                   on_step: OnStep | None) -> dict[str, HostOutcome]:
    """One host after the other, each waited for; the first failure stops the phase (as an operator would: a
    change that broke one Redis is not taken to the next). Run-once on the first host. The order: as the
    service ranks its hosts (`RoleState.rollout_order`: e.g. the current Redis master last), then by name in
    natural order (`web-2` before `web-10`)."""
    outcomes: dict[str, HostOutcome] = {}
    order = one_at_a_time_order(changes)
    for n in order:
        outcomes.update(runner.run({n: role_steps(changes[n], run_once=not outcomes)}, on_step))
        if not outcomes[n].ok:
            for rest in order:
                if rest not in outcomes:
                    outcomes[rest] = HostOutcome(False, f"not updated: {n} failed first (one host at a time)",
                                                 attempted=False)
            break
    return outcomes


def _retire(plan: OnlinePlan, runner: StepRunner, services: tuple[Service, ...], result: ApplyResult,
            touched: set[str], on_phase: Callable[[str, int], None] | None,
            on_phase_done: Callable[[PhaseResult], None] | None, on_step: OnStep | None) -> bool:
    """Retire the roles hosts no longer hold, before any other change (Service.retire), in reverse phase order:
    a leaving db member hands over while etcd and the firewall still count it, a leaving etcd member last. The
    hosts of one role at once. A failed retirement stops the apply before anything else changes (False)."""
    for service in reversed(services):
        changes = {name: rc for name, hp in plan.hosts.items()
                   for rc in hp.roles if rc.role == service.name and rc.retiring and not rc.empty}
        if not changes:
            continue
        phase = f"retire {service.name}"
        if on_phase:
            on_phase(phase, len(changes))
        t0 = time.monotonic()
        outcomes = runner.run({n: role_steps(rc) for n, rc in changes.items()}, on_step)
        touched.update(changes)
        failed = sorted((n for n, o in outcomes.items() if not o.ok), key=natural_key)
        for n in failed:
            result.recap[n].status = "failed"
            result.recap[n].error = f"[{phase}] {outcomes[n].error}"
        done = PhaseResult(phase, len(changes), time.monotonic() - t0, failed)
        result.phases.append(done)
        if on_phase_done:
            on_phase_done(done)
        if failed:
            result.aborted = f"stopped while retiring {service.name} on {', '.join(failed)}: nothing else was changed"
            return False
    return True


def _parallel(changes: dict[str, RoleChanges], runner: StepRunner,
              on_step: OnStep | None) -> dict[str, HostOutcome]:
    """Every host at once, in groups by `rollout_order` (e.g. the Patroni leader before its replicas); a failed
    group holds the later ones. Run-once on the first host by name."""
    once_host = min(changes, key=natural_key)
    outcomes: dict[str, HostOutcome] = {}
    for rank in sorted({rc.rollout_order for rc in changes.values()}):
        group = {n: rc for n, rc in changes.items() if rc.rollout_order == rank}
        if any(not o.ok for o in outcomes.values()):
            first = min((n for n, o in outcomes.items() if not o.ok), key=natural_key)
            outcomes.update({n: HostOutcome(False, f"not updated: {first} failed first", attempted=False)
                             for n in group})
            continue
        outcomes.update(runner.run({n: role_steps(rc, run_once=n == once_host) for n, rc in group.items()},
                                   on_step))
    return outcomes


def one_at_a_time_order(changes: dict[str, RoleChanges]) -> list[str]:
    return sorted(changes, key=lambda n: (changes[n].rollout_order, natural_key(n)))


def _not_applied(plan: OnlinePlan, result: ApplyResult, touched: set[str]) -> None:
    """A host whose planned changes were never sent (the apply stopped first) is `skipped`, not `changed`."""
    for name in plan.hosts:
        if name not in touched and result.recap[name].status == "changed":
            result.recap[name].status = "skipped"
            result.recap[name].error = "not applied: the apply stopped first"


def _all(failed_in: dict[str, set[str]]) -> set[str]:
    return set().union(*failed_in.values()) if failed_in else set()


def _rolling(service: Service, plan: OnlinePlan, placement: Placement, runner: StepRunner,
             changes: dict[str, RoleChanges], skip: set[str], result: ApplyResult,
             services: tuple[Service, ...], on_step: OnStep | None) -> dict[str, HostOutcome]:
    """A batch at a time: drain from the load balancers, change, wait healthy, put back (see rollout_groups:
    hosts not serving yet are changed all at once, undrained).

    The first batch is one host, where the run-once command (migrations) runs; a failed batch stops the
    rollout, so a bad release never reaches more than one batch. A drain or put-back that a load balancer did
    not take stops it too (the load balancer is reported failed): a host is never changed while it still
    gets traffic, and no further host is taken out while one is stuck out.
    """
    backend = service.drain_backend
    outcomes: dict[str, HostOutcome] = {}

    def traffic(action: str, batch: list[str]) -> dict[str, list[Step]]:
        steps: dict[str, list[Step]] = {}
        if backend is None:
            return steps
        for s in services:
            hook = s.drain if action == "drain" else s.undrain
            for host, host_steps in hook(placement, backend, batch, frozenset(skip)).items():
                steps.setdefault(host, []).extend(host_steps)
        return steps

    def lb_failures(steps: dict[str, list[Step]], what: str) -> list[str]:
        ran = runner.run(steps) if steps else {}
        bad = sorted(n for n, o in ran.items() if not o.ok)
        for n in bad:
            result.recap.setdefault(n, HostRecap())
            result.recap[n].status = "failed"
            result.recap[n].error = f"[rollout of {service.name}] {what}: {ran[n].error}"
        return bad

    stop = ""
    for i, (batch, drained) in enumerate(rollout_groups(changes, service.batch_size(plan.inv))):
        drain = traffic("drain", batch) if drained else {}
        if bad := lb_failures(drain, f"could not drain {', '.join(batch)}"):
            lb_failures({h: s for h, s in traffic("undrain", batch).items() if h not in bad},
                        f"could not put {', '.join(batch)} back after a failed drain")
            stop = f"not updated: draining it from {', '.join(bad)} failed"
            break
        ran = runner.run({n: role_steps(changes[n], run_once=i == 0) for n in batch}, on_step)
        outcomes.update(ran)
        healthy = [n for n in batch if ran[n].ok]
        if drained and healthy and (bad := lb_failures(traffic("undrain", healthy),
                                                       f"could not put {', '.join(healthy)} back")):
            stop = f"not updated: putting hosts back into {', '.join(bad)} failed"
            break
        if len(healthy) < len(batch):
            stop = "not updated: an earlier batch of the rolling release failed"
            break
    if stop:
        for name in changes:
            if name not in outcomes:
                outcomes[name] = HostOutcome(False, stop, attempted=False)
    return outcomes
