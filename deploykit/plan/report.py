"""The offline plan for people: the services' placement tables and the resilience matrix, with rich.

Generic: every table of the placement comes from a service (`Service.describe`). The resilience matrix has one
row per lost unit; beyond SUMMARY_ROWS rows (a `host` failure domain over hundreds of hosts) only the rows
that are not all "up" are shown, with a count of the others, and `--failures-only` shows only those anyway.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.plan.resilience import ResilienceReport, Scenario, Status
from deploykit.services import SERVICES
from deploykit.services.contract import Section, Service

_STYLE = {Status.UP: "green", Status.DEGRADED: "yellow", Status.DOWN: "bold red"}
_MARK = {Status.UP: "up", Status.DEGRADED: "DEGRADED", Status.DOWN: "DOWN"}
SUMMARY_ROWS = 40


def render_placement(inv: Inventory, p: Placement, services: tuple[Service, ...] = SERVICES) -> Group:
    merged: dict[str, Section] = {}
    for service in services:
        for section in service.describe(inv, p):
            have = merged.get(section.title)
            merged[section.title] = section if have is None else Section(
                have.title, have.columns, have.rows + section.rows)
    tables: list[Table | Text] = []
    for section in merged.values():
        table = Table(title=section.title, title_justify="left")
        for col in section.columns:
            table.add_column(col)
        for row in section.rows:
            table.add_row(*row)
        tables.append(table)
    roles = ", ".join(f"{s.role} {len(inv.with_role(s.role))}" for s in services
                      if s.role is not None and inv.with_role(s.role))
    tables.append(Text(f"hosts: {len(inv.hosts)} in {len(inv.sites)} sites at {len(inv.providers)} providers"
                       f"   roles: {roles or '-'}"))
    return Group(*tables)


def shown_scenarios(r: ResilienceReport, failures_only: bool) -> tuple[list[Scenario], int]:
    """The rows to print, and how many all-up rows were left out."""
    if not failures_only and len(r.scenarios) <= SUMMARY_ROWS:
        return list(r.scenarios), 0
    shown = [s for s in r.scenarios if s.status is not Status.UP]
    return shown, len(r.scenarios) - len(shown)


def render_resilience(r: ResilienceReport, failures_only: bool = False) -> Group:
    title = f"Resilience: losing any one {' / '.join(r.failure_domains)}"
    table = Table(title=title, title_justify="left")
    table.add_column("lost")
    table.add_column("hosts", justify="right")
    for tier in r.tiers:
        table.add_column(tier, justify="center")
    table.add_column("verdict")
    rows, hidden = shown_scenarios(r, failures_only)
    for s in rows:
        cells = [Text(_MARK[v.status], style=_STYLE[v.status]) for v in s.verdicts]
        table.add_row(f"{s.level} {s.unit}", str(len(s.lost_hosts)), *cells,
                      Text(_MARK[s.status], style=_STYLE[s.status]))
    parts: list[Table | Text] = [table] if rows else []
    if hidden:
        why = "--failures-only" if failures_only else f"more than {SUMMARY_ROWS} rows"
        parts.append(Text(f"{hidden} of {len(r.scenarios)} losses leave every tier up (not listed: {why})",
                          style="green"))
    for s, v in (*r.failures, *r.degradations):
        # Every line names its loss (the table may not list that row; several losses share a reason).
        where = "" if v.reason.startswith(s.title) else f" ({s.title})"
        parts.append(Text.assemble((f"{_MARK[v.status]} {v.tier}", _STYLE[v.status]), f"{where}: {v.reason}"))
        if v.fix:
            parts.append(Text(f"    fix: {v.fix}", style="cyan"))
    if r.survives:
        n = len(r.scenarios)
        verdict = Text(f"Survives the loss of any one {' or '.join(r.failure_domains)} ({n} scenarios checked).",
                       style="bold green")
    else:
        bad = sorted({s.title for s, _ in r.failures})
        verdict = Text(f"Does NOT survive: {'; '.join(bad)}.", style="bold red")
    return Group(*parts, verdict)


def print_offline_plan(console: Console, inv: Inventory, p: Placement, r: ResilienceReport,
                       failures_only: bool = False) -> None:
    console.print(Text(f"deploykit plan (offline): {inv.name} from {inv.path}", style="bold"))
    for w in inv.warnings:
        console.print(Text(w, style="yellow"))
    console.print(render_placement(inv, p))
    console.print()
    console.print(render_resilience(r, failures_only))
