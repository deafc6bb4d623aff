"""The online plan, the progress of each stage and the apply recap for people (rich) and for CI (JSON data)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from deploykit.apply.planner import OnlinePlan
from deploykit.apply.runner import ApplyResult
from deploykit.execute.diff import HostPlan


def plan_data(plan: OnlinePlan) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for name, hp in plan.hosts.items():
        hosts[name] = {"status": "change" if hp.changed else "unchanged", "roles": [
            {"role": rc.role, "retiring": rc.retiring, "packages": list(rc.packages), "masks": list(rc.masks),
             "directories": [d.path for d in rc.directories],
             "files": [{"path": c.file.path, "action": c.action, "diff": c.diff} for c in rc.files],
             "services": [{"name": s.name, "actions": list(s.actions)} for s in rc.services]}
            for rc in hp.roles if not rc.empty]}
    for name, err in plan.unreachable.items():
        hosts[name] = {"status": "unreachable", "error": err}
    for name, err in plan.probe_failed.items():
        hosts[name] = {"status": "failed", "error": err}
    for name, found in plan.findings.items():
        hosts[name]["findings"] = list(found)
    return {
        "format": "deploykit.plan/v1",
        "inventory": str(plan.inv.path),
        "summary": plan.summary(),
        "counts": {"hosts": len(hosts), "change": len(plan.changed),
                   "unchanged": len(plan.hosts) - len(plan.changed), "unreachable": len(plan.unreachable),
                   "failed": len(plan.probe_failed)},
        "hosts": hosts,
    }


def _diff_text(diff: str) -> Text:
    out = Text()
    for line in diff.splitlines():
        style = ("green" if line.startswith("+") and not line.startswith("+++")
                 else "red" if line.startswith("-") and not line.startswith("---")
                 else "cyan" if line.startswith("@@") else "dim")
        out.append("      " + line + "\n", style=style)
    return out


def print_host_plan(console: Console, hp: HostPlan, show_diffs: bool = True) -> None:
    console.print(Text.assemble(("~ ", "yellow"), (hp.host, "bold"), f"  ({hp.count()} change(s))"))
    for rc in hp.roles:
        if rc.empty:
            continue
        if rc.retiring:  # the role is taken off the host: handed over, then stopped (before every phase)
            console.print(Text(f"  [{rc.role}] retire: hand over, leave the cluster, stop", style="bold red"))
        else:
            console.print(Text(f"  [{rc.role}]", style="bold cyan"))
        for p in rc.packages:
            console.print(Text(f"    + package {p}", style="green"))
        for u in rc.masks:
            console.print(Text(f"    - mask {u}", style="red"))
        for d in rc.directories:
            console.print(Text(f"    + directory {d.path} ({d.mode} {d.owner}:{d.group})", style="green"))
        for c in rc.files:
            mark = {"create": "+", "update": "~", "metadata": "~"}[c.action]
            seed = " (seed)" if c.file.seed else ""
            console.print(Text(f"    {mark} file {c.file.path}{seed}", style="green" if mark == "+" else "yellow"))
            if show_diffs and c.diff and c.action != "metadata":
                console.print(_diff_text(c.diff), end="")
        for s in rc.services:
            console.print(Text(f"    * service {s.name}: {', '.join(s.actions)}", style="magenta"))


def print_plan(console: Console, plan: OnlinePlan, show_diffs: bool = True) -> None:
    for name, err in sorted(plan.unreachable.items()):
        console.print(Text(f"! {name}: {err}", style="bold red"))
    for name, err in sorted(plan.probe_failed.items()):
        console.print(Text(f"! {name}: {err}", style="bold red"))
    for name, found in sorted(plan.findings.items()):
        for line in found:
            console.print(Text(f"? {name}: {line}", style="yellow"))
    for hp in plan.changed:
        print_host_plan(console, hp, show_diffs)
    if plan.has_errors:
        console.print(Text(plan.summary() + ": the hosts marked ! could not be planned", style="bold red"))
    elif plan.changed:
        console.print(Text(plan.summary(), style="bold yellow"))
    else:
        console.print(Text(plan.summary() + ". No changes.", style="bold green"))


def print_recap(console: Console, result: ApplyResult) -> None:
    table = Table(title="Recap", title_justify="left")
    for col in ("host", "status", "changes", "error"):
        table.add_column(col)
    styles = {"ok": "green", "changed": "yellow", "failed": "bold red", "unreachable": "bold red",
              "skipped": "dim"}
    for name in sorted(result.recap):
        r = result.recap[name]
        table.add_row(name, Text(r.status, style=styles.get(r.status, "")), str(r.changes), r.error)
    console.print(table)
    for line in result.degraded:
        console.print(Text(f"DEGRADED {line}", style="yellow"))
    if result.aborted:
        console.print(Text(result.aborted, style="bold red"))
    counts: dict[str, int] = {}
    for r in result.recap.values():
        counts[r.status] = counts.get(r.status, 0) + 1
    line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    console.print(Text(f"{len(result.recap)} hosts: {line}", style="bold green" if result.ok else "bold red"))


PLAIN_EVERY_S = 5.0  # without a terminal: a progress line at least this far apart (besides each tenth)
PLAIN_STEPS_FROM = 10  # ... and a line per tenth of the hosts only from this many hosts on
REDRAW_EVERY_S = 0.1  # on a terminal: the live line is redrawn at most this often


def plain_line_due(done: int, total: int, last_done: int, since_last_s: float) -> bool:
    """Without a terminal, whether to print a progress line now: when another tenth of the hosts is done (for
    PLAIN_STEPS_FROM hosts or more), or PLAIN_EVERY_S after the last line if any host finished since; never for
    the last host (the stage's final line says it), so never one line per host at 500 hosts."""
    if done >= total or done <= last_done:
        return False
    if total >= PLAIN_STEPS_FROM and done * 10 // total > last_done * 10 // total:
        return True
    return since_last_s >= PLAIN_EVERY_S


def progress_text(stage: str, done: int, total: int, failed: int) -> str:
    """`connect 480/500, 2 unreachable`: hosts finished (either way) of the stage's hosts, and failures so far."""
    word = "unreachable" if stage == "connect" else "failed"
    return f"{stage} {done}/{total}" + (f", {failed} {word}" if failed else "")


class ProgressLine:
    """Hosts done / total and failures of the running stage (connect, probe, each phase of an apply): on a
    terminal one line redrawn in place, erased at the stage's end; otherwise plain lines (`plain_line_due`).
    Each stage ends with one final line. Implements the executor's FanoutProgress."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.stage, self.total, self.done, self.failed = "", 0, 0, 0
        self.t0 = self.last_t = 0.0
        self.last_done = 0
        self.live: Live | None = None

    def start(self, stage: str, total: int) -> None:
        self.finish_quietly()
        self.stage, self.total, self.done, self.failed = stage, total, 0, 0
        self.t0 = self.last_t = self.clock()
        self.last_done = 0
        if self.console.is_terminal and total > 0:
            self.live = Live(self._text(), console=self.console, auto_refresh=False, transient=True)
            self.live.start(refresh=True)

    def advance(self, ok: bool) -> None:
        self.done = min(self.total, self.done + 1)
        self.failed += 0 if ok else 1
        now = self.clock()
        if self.live is not None:
            if now - self.last_t >= REDRAW_EVERY_S or self.done == self.total:
                self.live.update(self._text(), refresh=True)
                self.last_t = now
        elif plain_line_due(self.done, self.total, self.last_done, now - self.last_t):
            self.console.print(self._text())
            self.last_done, self.last_t = self.done, now

    def finish(self, line: Text | None = None) -> None:
        """End the stage with `line`, or with `connect: 498/500 ok in 3.1s, 2 unreachable`."""
        if not self.stage:
            return
        total, failed, ok = self.total, self.failed, self.done - self.failed
        self.finish_quietly()
        if line is None and total:
            word = "unreachable" if self.stage == "connect" else "failed"
            line = Text(f"{self.stage}: {ok}/{total} ok in {self.clock() - self.t0:.1f}s"
                        + (f", {failed} {word}" if failed else ""), style="red" if failed else "dim")
        if line is not None:
            self.console.print(line)
        self.stage = ""

    def finish_quietly(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _text(self) -> Text:
        return Text(progress_text(self.stage, self.done, self.total, self.failed), style="dim")
