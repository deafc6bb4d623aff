"""The stages of `plan` (online) and `apply`, after pyinfra_cli/main.py: connect, probe and diff, show
changes, confirm, execute phase by phase, recap. Returns exit codes; the CLI only calls these."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from deploykit.apply import planfile
from deploykit.apply.planner import OnlinePlan, make_plan
from deploykit.apply.render import ProgressLine, plan_data, print_plan, print_recap
from deploykit.apply.runner import ApplyResult, OnStep, PhaseResult, StepRunner, apply_plan
from deploykit.apply.selection import select_hosts
from deploykit.errors import DeploykitError, ExitCode
from deploykit.execute.steps import HostOutcome, Step
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.placement import Placement
from deploykit.secrets_store import SecretStore


def _plan(inv: Inventory, placement: Placement, err: Console, limit: tuple[str, ...], accept_new: bool,
          ensure_facts: bool):
    from deploykit.execute import executor

    hosts = select_hosts(inv, limit)
    store = SecretStore(inv)
    t0 = time.monotonic()
    progress = ProgressLine(err)
    try:
        with executor.reporting(progress):  # the connect and probe stages, each a progress line
            plan, session = make_plan(inv, placement, store, hosts, accept_new_host_keys=accept_new, limit=limit,
                                      ensure_facts=ensure_facts)
    finally:
        progress.finish_quietly()
    err.print(Text(f"probed {len(plan.hosts)} of {len(hosts)} hosts in {time.monotonic() - t0:.1f}s", style="dim"))
    return plan, session


def online_plan(inv: Inventory, placement: Placement, out: Console, err: Console, *, as_json: bool,
                out_file: Path | None, limit: tuple[str, ...], show_diffs: bool, accept_new_host_keys: bool) -> int:
    from deploykit.execute import executor

    # A plan saved to be applied makes the host facts that are made on the hosts (e.g. mesh keys), so that
    # applying it changes exactly what it shows; a plain plan changes nothing anywhere.
    plan, session = _plan(inv, placement, err, limit, accept_new_host_keys, ensure_facts=out_file is not None)
    executor.disconnect(session)
    if as_json:
        click.echo(json.dumps(plan_data(plan), indent=2))
    else:
        print_plan(out, plan, show_diffs)
    if out_file is not None:
        if plan.has_errors:
            err.print(Text("not saving the plan: some hosts could not be planned", style="red"))
        else:
            planfile.save_plan(plan, out_file)
            err.print(Text(f"plan saved to {out_file}; apply it with: deploykit apply {out_file}", style="cyan"))
    if plan.has_errors:
        return ExitCode.ERROR
    return ExitCode.CHANGES if plan.changed else ExitCode.OK


def _is_saved_plan(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def apply_target(target: Path, out: Console, err: Console, *, yes: bool, limit: tuple[str, ...],
                 show_diffs: bool, accept_new_host_keys: bool) -> int:
    from deploykit.execute import executor

    saved = planfile.load_plan(target) if _is_saved_plan(target) else None
    if saved is not None:
        if limit:
            raise DeploykitError("--limit cannot be combined with a saved plan (its limit is part of the plan)")
        inv = load_inventory(saved.inventory)
        limit = saved.limit
    else:
        inv = load_inventory(target)
    placement = plan_placement(inv)
    plan, session = _plan(inv, placement, err, limit, accept_new_host_keys, ensure_facts=True)
    try:
        if saved is not None:
            planfile.check_current(saved, plan)
            err.print(Text(f"the saved plan {target} is current: applying it", style="cyan"))
        print_plan(out, plan, show_diffs)
        if not plan.changed:
            if plan.has_errors:
                return ExitCode.ERROR
            return ExitCode.OK
        if saved is None and not yes:
            if not sys.stdin.isatty():
                raise DeploykitError("apply needs confirmation but there is no terminal to ask on; "
                                     "pass --yes (or apply a saved plan)")
            if not click.confirm(f"Apply these changes to {len(plan.changed)} host(s)?", default=False):
                err.print("nothing applied")
                return ExitCode.ERROR
        t0 = time.monotonic()
        result = apply_with_progress(plan, session, placement, err)
        print_recap(out, result)
        err.print(Text(f"applied in {time.monotonic() - t0:.1f}s", style="dim"))
        return ExitCode.OK if result.ok else ExitCode.ERROR
    finally:
        executor.disconnect(session)


def apply_with_progress(plan: OnlinePlan, runner: StepRunner, placement: Placement, err: Console) -> ApplyResult:
    """apply_plan, each phase shown on `err`: its header, a progress line (hosts done / total, failures so far)
    while it runs, its final line."""
    progress = ProgressLine(err)

    def on_phase(role: str, hosts: int) -> None:
        err.print(Text(f"==> phase {role}: {hosts} host(s)", style="bold"))
        progress.start(f"phase {role}", hosts)

    try:
        return apply_plan(plan, CountingRunner(runner, progress), placement, on_phase=on_phase,
                          on_phase_done=lambda p: progress.finish(phase_done_text(p)), on_step=_no_step)
    finally:
        progress.finish_quietly()


FAILED_NAMED = 10  # a phase's final line names this many failed hosts at most (the recap lists every one)


def phase_done_text(p: PhaseResult) -> Text:
    names = ", ".join(p.failed[:FAILED_NAMED])
    more = f" and {len(p.failed) - FAILED_NAMED} more (see the recap)" if len(p.failed) > FAILED_NAMED else ""
    failed = f", FAILED: {names}{more}" if p.failed else ""
    return Text(f"    {p.role}: {p.hosts - len(p.failed)}/{p.hosts} ok in {p.seconds:.1f}s{failed}",
                style="red" if p.failed else "green")


def _no_step(host: str, description: str) -> None:
    """The apply's on_step: nothing to print per step (CountingRunner counts hosts), but given, so that the
    runner passes it with a phase's own steps."""


class CountingRunner:
    """The session as the runner's StepRunner, telling `progress` as each host of a phase finishes its steps
    (when its last step succeeds, live; a failed host when its run returns).

    Only the runs the runner passes an on_step to are a phase's hosts: it passes none with the load balancers'
    drain and put-back steps of a rolling release, which are not counted."""

    def __init__(self, runner: StepRunner, progress: ProgressLine) -> None:
        self.runner = runner
        self.progress = progress

    def run(self, steps: dict[str, list[Step]], on_step: OnStep | None = None) -> dict[str, HostOutcome]:
        if on_step is None:
            return self.runner.run(steps)
        left = {host: len(host_steps) for host, host_steps in steps.items()}
        counted: set[str] = set()

        def step_done(host: str, description: str) -> None:
            on_step(host, description)
            left[host] -= 1
            if left[host] == 0 and host not in counted:
                counted.add(host)
                self.progress.advance(True)

        outcomes = self.runner.run(steps, step_done)
        for host in steps:
            if host not in counted:
                counted.add(host)
                outcome = outcomes.get(host)
                self.progress.advance(outcome is not None and outcome.ok)
        return outcomes


__all__ = ["CountingRunner", "OnlinePlan", "apply_target", "apply_with_progress", "online_plan"]
