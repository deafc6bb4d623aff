"""The offline plan for people: placement tables and the resilience matrix, with rich."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.plan.resilience import ResilienceReport, Status

_STYLE = {Status.UP: "green", Status.DEGRADED: "yellow", Status.DOWN: "bold red"}
_MARK = {Status.UP: "up", Status.DEGRADED: "DEGRADED", Status.DOWN: "DOWN"}
MAX_LISTED = 6


def names(items: list[str] | tuple[str, ...]) -> str:
    items = list(items)
    if len(items) <= MAX_LISTED:
        return ", ".join(items) or "-"
    return f"{', '.join(items[:MAX_LISTED - 1])}, ... ({len(items)} in all)"


def render_placement(inv: Inventory, p: Placement) -> Group:
    data = Table(title="Data tier", title_justify="left", expand=False)
    for col in ("tier", "members", "decided"):
        data.add_column(col)
    if p.etcd.members:
        data.add_row("etcd", names([f"{m.name} ({m.provider})" for m in p.etcd.members]),
                     f"{len(p.etcd.members)} members, quorum {p.etcd.quorum}")
    if p.db.members:
        sync = (f"synchronous: {p.db.sync_standbys} standby(s) confirm each commit ({p.db.sync_reason})"
                if p.db.synchronous and p.db.sync_standbys else f"no synchronous standby ({p.db.sync_reason})")
        data.add_row("db (Patroni)", names([f"{m.name} ({m.provider})" for m in p.db.members]),
                     f"bootstraps on {p.db.bootstrap}; {sync}")
    if p.cache.members:
        data.add_row("cache (Redis)", names([f"{m.name} ({m.provider})" for m in p.cache.members]),
                     f"master first on {p.cache.master}; {len(p.cache.sentinels)} sentinels, quorum {p.cache.quorum}")
    web = Table(title="Load balancers per site (keepalived holds the VIP, HAProxy serves it)", title_justify="left")
    for col in ("site", "VIP", "VRRP id", "lb hosts (priority)", "app backends"):
        web.add_column(col)
    for s in p.sites:
        app = next((f for f in s.frontends if f.name == "app"), None)
        local = [b.name for b in app.backends if not b.backup] if app else []
        backup = [b.name for b in app.backends if b.backup] if app else []
        web.add_row(f"{s.site} ({s.provider})", str(s.vip), str(s.router_id),
                    names([f"{m.name} ({m.priority})" for m in s.members]) if s.members else "no lb hosts",
                    f"{len(local)} local" + (f", {len(backup)} backup in other sites" if backup else ""))
    fronts = Table(title="HAProxy frontends on every lb host", title_justify="left")
    for col in ("port", "frontend", "health check", "backends"):
        fronts.add_column(col)
    if p.sites:
        for f in p.sites[0].frontends:
            backends = ("the site's app hosts first, the others as backup" if f.name == "app"
                        else names([b.name for b in f.backends]))
            fronts.add_row(str(f.port), f.name, f.check, backends)
    counts = Text(f"app hosts: {len(p.app)}   workers: {len(p.workers)}   "
                  f"hosts: {len(inv.hosts)} in {len(inv.sites)} sites at {len(inv.providers)} providers")
    return Group(data, web, fronts, counts)


def render_resilience(r: ResilienceReport) -> Group:
    title = f"Resilience: losing any one {' / '.join(r.failure_domains)}"
    table = Table(title=title, title_justify="left")
    table.add_column("lost")
    table.add_column("hosts", justify="right")
    for tier in r.tiers:
        table.add_column(tier, justify="center")
    table.add_column("verdict")
    for s in r.scenarios:
        cells = [Text(_MARK[v.status], style=_STYLE[v.status]) for v in s.verdicts]
        table.add_row(f"{s.level} {s.unit}", str(len(s.lost_hosts)), *cells,
                      Text(_MARK[s.status], style=_STYLE[s.status]))
    lines: list[Text] = []
    for _s, v in (*r.failures, *r.degradations):
        lines.append(Text.assemble((f"{_MARK[v.status]} ", _STYLE[v.status]), f"{v.tier}: {v.reason}"))
        if v.fix:
            lines.append(Text(f"    fix: {v.fix}", style="cyan"))
    if r.survives:
        n = len(r.scenarios)
        verdict = Text(f"Survives the loss of any one {' or '.join(r.failure_domains)} ({n} scenarios checked).",
                       style="bold green")
    else:
        bad = sorted({s.title for s, _ in r.failures})
        verdict = Text(f"Does NOT survive: {'; '.join(bad)}.", style="bold red")
    return Group(table, *lines, verdict)


def print_offline_plan(console: Console, inv: Inventory, p: Placement, r: ResilienceReport) -> None:
    console.print(Text(f"deploykit plan (offline): {inv.name} from {inv.path}", style="bold"))
    for w in inv.warnings:
        console.print(Text(w, style="yellow"))
    console.print(render_placement(inv, p))
    console.print()
    console.print(render_resilience(r))
