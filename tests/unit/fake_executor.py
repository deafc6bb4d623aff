"""An in-memory stand-in for the executor, for the apply workflow's unit tests (issue 8).

`FakeExecutor` implements the runner's `StepRunner` protocol: it records every call (which hosts, which steps,
in which order, during which phase) and fails the steps it was told to. `online_plan` builds the `OnlinePlan`
that `make_plan` would have built from probed facts, without connecting anywhere.

Imported by the test modules (pytest puts this directory on sys.path, as for any test module without a
package); it is not a conftest, so nothing here runs unless a test asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from deploykit.apply.planner import OnlinePlan, inventory_sha256
from deploykit.execute.diff import diff_host
from deploykit.execute.probe import HostFacts
from deploykit.execute.steps import HostOutcome, Shell, Step
from deploykit.inventory.model import Inventory
from deploykit.plan.desired import RoleState

ERROR = "boom"


@dataclass(frozen=True)
class Failure:
    """Fail `host`'s first step whose description or command contains `match` ("" matches any step), in
    `phase` only when given."""

    host: str
    match: str = ""
    phase: str | None = None
    error: str = ERROR

    def hits(self, host: str, step: Step, phase: str) -> bool:
        if host != self.host or (self.phase is not None and phase != self.phase):
            return False
        command = step.command if isinstance(step, Shell) else ""
        return self.match in step.description or self.match in command


@dataclass(frozen=True)
class Call:
    """One `run` call: the phase announced before it, and the steps of each host in the order given."""

    phase: str
    steps: dict[str, tuple[Step, ...]]

    @property
    def hosts(self) -> list[str]:
        return list(self.steps)

    def descriptions(self, host: str) -> list[str]:
        return [s.description for s in self.steps[host]]

    @property
    def kind(self) -> str:
        """`drain` or `undrain` when every step is one (the load balancers' calls), else `change`."""
        every = [s.description for steps in self.steps.values() for s in steps]
        if every and all(d.startswith("drain ") for d in every):
            return "drain"
        if every and all(d.startswith("put ") and d.endswith(" back into HAProxy") for d in every):
            return "undrain"
        return "change"

    def brief(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.phase, self.kind, tuple(self.hosts))


@dataclass
class FakeExecutor:
    failures: list[Failure] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    done: list[tuple[str, str]] = field(default_factory=list)  # (host, step description) that succeeded
    phase: str = ""

    def fail(self, host: str, match: str = "", *, phase: str | None = None, error: str = ERROR) -> FakeExecutor:
        self.failures.append(Failure(host, match, phase, error))
        return self

    def on_phase(self, name: str, hosts: int) -> None:
        """Pass as apply_plan's `on_phase`: later calls are recorded under this phase."""
        self.phase = name

    def run(self, steps: dict[str, list[Step]],
            on_step: Callable[[str, str], None] | None = None) -> dict[str, HostOutcome]:
        """Each host's steps in order, stopping at its first failing step; like the executor's `run_steps`."""
        self.calls.append(Call(self.phase, {h: tuple(s) for h, s in steps.items()}))
        outcomes: dict[str, HostOutcome] = {}
        for host, host_steps in steps.items():
            outcome = HostOutcome()
            for step in host_steps:
                failure = next((f for f in self.failures if f.hits(host, step, self.phase)), None)
                if failure is not None:
                    outcome = HostOutcome(False, f"{step.description}: {failure.error}", outcome.steps_done)
                    break
                outcome.steps_done += 1
                self.done.append((host, step.description))
                if on_step:
                    on_step(host, step.description)
            outcomes[host] = outcome
        return outcomes

    # --- what happened --------------------------------------------------------------------------------------
    def briefs(self) -> list[tuple[str, str, tuple[str, ...]]]:
        return [c.brief() for c in self.calls]

    def phases(self) -> list[str]:
        """The phases that sent anything, in order."""
        return list(dict.fromkeys(c.phase for c in self.calls))

    def hosts_sent(self) -> set[str]:
        return {h for c in self.calls for h in c.steps}

    def in_phase(self, phase: str) -> list[Call]:
        return [c for c in self.calls if c.phase == phase]


def online_plan(inv: Inventory, states: Mapping[str, list[RoleState]], *,
                facts: Mapping[str, HostFacts] | None = None, unreachable: Mapping[str, str] | None = None,
                probe_failed: Mapping[str, str] | None = None, limit: tuple[str, ...] = (),
                redact: Callable[[str], str] | None = None) -> OnlinePlan:
    """The plan `make_plan` builds, from facts given here (default: fresh servers, nothing installed); diffs
    are redacted with `redact` (default: not at all)."""
    plan = OnlinePlan(inv, inventory_sha256(inv), limit=limit)
    plan.unreachable = dict(unreachable or {})
    plan.probe_failed = dict(probe_failed or {})
    for name, host_states in states.items():
        if name not in plan.unreachable and name not in plan.probe_failed:
            plan.hosts[name] = diff_host(name, host_states, (facts or {}).get(name, HostFacts()),
                                         redact or _identity)
    return plan


def _identity(text: str) -> str:
    return text

