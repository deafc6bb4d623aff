"""The backup commands' workflow: `deploykit backup`, `backups` and `restore` (the shell they run is in
scripts.py, the reading of pgBackRest's answers in catalog.py). Each step runs on its hosts through the
executor and is timed; a step that fails stops the command and says what state it left and how to go on."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from deploykit.errors import DeploykitError
from deploykit.execute.steps import HostOutcome, Shell
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.services.backup import scripts
from deploykit.services.backup.catalog import (
    CatalogError,
    RepoCatalog,
    covering,
    describe_range,
    iso,
    parse_info,
    parse_target,
    pg_time,
)
from deploykit.services.backup.placement import BackupPlan, Repository, backup_plan
from deploykit.services.db.config import APP_DATABASE, PG_VERSION
from deploykit.services.db.placement import DbPlan, db_plan

WAL_NAME = re.compile(r"[0-9A-F]{24}")  # a WAL segment's file name: timeline, log, segment


class BackupError(DeploykitError):
    """A backup command could not do what it was asked (said with the host and the step)."""


@dataclass
class Remote:
    """Connections to some hosts of the inventory, and the steps run on them."""

    inv: Inventory
    session: Any
    err: Console

    def run(self, what: str, scripts_by_host: dict[str, str]) -> dict[str, HostOutcome]:
        steps = {h: [Shell(what, s)] for h, s in scripts_by_host.items()}
        return dict(self.session.run(steps))

    def must(self, what: str, scripts_by_host: dict[str, str], after: str = "") -> dict[str, HostOutcome]:
        """Run, timed; every host must succeed, else BackupError naming each failure (and what `after` says)."""
        t0 = time.monotonic()
        got = self.run(what, scripts_by_host)
        failed = {h: o.error for h, o in got.items() if not o.ok}
        if failed:
            lines = [f"{what} failed on {h}: {e}" for h, e in failed.items()]
            raise BackupError("\n".join([*lines, after] if after else lines))
        self.err.print(Text(f"  {what}: {time.monotonic() - t0:.1f} s", style="dim"))
        return got

    @property
    def unreachable(self) -> dict[str, str]:
        return dict(self.session.unreachable)

    def close(self) -> None:
        from deploykit.execute import executor

        executor.disconnect(self.session)


def _say(out: Console, text: object) -> None:
    """One result line (or table), never wrapped at the terminal's width: scripts and CI logs read it whole."""
    out.print(text, soft_wrap=True, highlight=False)


def _connect(inv: Inventory, names: list[str], err: Console) -> Remote:
    from deploykit.execute import executor

    hosts = [h for h in inv.hosts if h.name in set(names)]
    t0 = time.monotonic()
    session = executor.connect(hosts)
    remote = Remote(inv, session, err)
    for name, why in remote.unreachable.items():
        err.print(Text(f"{name}: {why}", style="red"))
    err.print(Text(f"connected to {len(hosts) - len(remote.unreachable)} of {len(hosts)} hosts in "
                   f"{time.monotonic() - t0:.1f} s", style="dim"))
    return remote


def _load(path: Path) -> tuple[Inventory, BackupPlan, DbPlan]:
    inv = load_inventory(path)
    placement = plan_placement(inv)
    plan = backup_plan(placement)
    if not plan.repositories:
        raise BackupError(f"{inv.path}: no host has the backup role: give it to two hosts in different providers "
                          "and apply (docs/backups.md)")
    if not plan.members:
        raise BackupError(f"{inv.path}: no host has the db role: there is no database to back up")
    return inv, plan, db_plan(placement)


def _chosen(plan: BackupPlan, wanted: tuple[str, ...]) -> list[Repository]:
    """Repositories named by host or as repoN; every one when none is named."""
    if not wanted:
        return list(plan.repositories)
    out = []
    for w in wanted:
        found = next((r for r in plan.repositories if w in (r.host, f"repo{r.index}")), None)
        if found is None:
            names = ", ".join(f"{r.host} (repo{r.index})" for r in plan.repositories)
            raise BackupError(f"--repo {w}: not a repository; the repositories are {names}")
        out.append(found)
    return out


def _catalogs(remote: Remote, plan: BackupPlan, repos: list[Repository]) -> tuple[list[RepoCatalog], list[str]]:
    """The catalog of each reachable repository, and a line for each one that could not be read."""
    reachable = [r for r in repos if r.host not in remote.unreachable]
    got = remote.run("read the repository", {r.host: scripts.info(plan.stanza, r.index) for r in reachable})
    catalogs, problems = [], [f"repo{r.index} ({r.host}): {remote.unreachable[r.host]}"
                              for r in repos if r.host in remote.unreachable]
    for r in reachable:
        o = got[r.host]
        if not o.ok:
            problems.append(f"repo{r.index} ({r.host}): {o.error}")
            continue
        text, _, newest = o.output.partition(scripts.SEP)
        try:
            catalogs.append(parse_info(r.index, r.host, plan.stanza, text, newest))
        except CatalogError as exc:
            problems.append(f"repo{r.index} ({r.host}): {exc}")
    return catalogs, problems


# --- deploykit backup ----------------------------------------------------------------------------------------
def take_backup(path: Path, kind: str, wanted: tuple[str, ...], out: Console, err: Console) -> int:
    inv, plan, db = _load(path)
    repos = _chosen(plan, wanted)
    t_all = time.monotonic()
    remote = _connect(inv, [r.host for r in repos], err)
    failed = [r.host for r in repos if r.host in remote.unreachable]
    try:
        # One repository after the other: each backup reads the whole database from the primary.
        for r in repos:
            if r.host in remote.unreachable:
                continue
            t0 = time.monotonic()
            o = remote.run(f"{kind} backup into repo{r.index}", {r.host: scripts.backup(plan.stanza, r.index, kind)})
            took = time.monotonic() - t0
            if not o[r.host].ok:
                failed.append(r.host)
                err.print(Text(f"repo{r.index} ({r.host}): {kind} backup failed after {took:.1f} s: "
                               f"{o[r.host].error}", style="red"))
                continue
            try:
                newest = parse_info(r.index, r.host, plan.stanza, o[r.host].output, "").backups
            except CatalogError as exc:  # backed up; only the report is unreadable
                err.print(Text(f"repo{r.index} ({r.host}): {exc}", style="yellow"))
                newest = ()
            what = (f"{newest[-1].label}, {_mib(newest[-1].size)} (stored {_mib(newest[-1].stored)})"
                    if newest else "no backup listed")
            _say(out, f"repo{r.index} ({r.host}): {kind} backup {what} in {took:.1f} s")
    finally:
        remote.close()
    done = len(repos) - len(failed)
    err.print(Text(f"{done} of {len(repos)} repositories backed up in {time.monotonic() - t_all:.1f} s",
                   style="green" if not failed else "red"))
    return 1 if failed else 0


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


# --- deploykit backups ---------------------------------------------------------------------------------------
def list_backups(path: Path, as_json: bool, out: Console, err: Console) -> int:
    inv, plan, db = _load(path)
    t0 = time.monotonic()
    remote = _connect(inv, [r.host for r in plan.repositories], err)
    try:
        catalogs, problems = _catalogs(remote, plan, list(plan.repositories))
    finally:
        remote.close()
    if as_json:
        click.echo(json.dumps(catalog_data(plan, catalogs, problems), indent=2))
    else:
        for c in catalogs:
            table = Table(title=f"repo{c.index} on {c.host}: {c.status}"
                                f"{', encrypted' if c.encrypted else ', NOT ENCRYPTED'}", title_justify="left")
            for col in ("backup", "type", "started", "took", "database", "stored"):
                table.add_column(col)
            for b in c.backups:
                table.add_row(b.label, b.kind, iso(b.start), f"{(b.stop - b.start).total_seconds():.0f} s",
                              _mib(b.size), _mib(b.stored))
            _say(out, table)
            _say(out, f"recoverable: {describe_range(c)}")
    for line in problems:
        err.print(Text(line, style="red"))
    err.print(Text(f"read {len(catalogs)} of {len(plan.repositories)} repositories in "
                   f"{time.monotonic() - t0:.1f} s", style="dim"))
    return 1 if problems else 0


def catalog_data(plan: BackupPlan, catalogs: list[RepoCatalog], problems: list[str]) -> dict[str, Any]:
    by_index = {c.index: c for c in catalogs}
    repos = []
    for r in plan.repositories:
        c = by_index.get(r.index)
        span = c.recoverable if c else None
        repos.append({
            "repo": r.index, "host": r.host, "provider": r.provider, "read": c is not None,
            "status": c.status if c else None, "encrypted": c.encrypted if c else None,
            "recoverable": {"from": iso(span[0]), "until": iso(span[1])} if span else None,
            "backups": [{"label": b.label, "type": b.kind, "start": iso(b.start), "stop": iso(b.stop),
                         "size": b.size, "stored": b.stored, "wal": [b.wal_start, b.wal_stop]}
                        for b in (c.backups if c else ())],
        })
    return {"stanza": plan.stanza, "repositories": repos, "problems": problems}


# --- deploykit restore ---------------------------------------------------------------------------------------
def _target(text: str) -> datetime:
    try:
        target = parse_target(text)
    except ValueError as exc:
        raise BackupError(str(exc)) from exc
    if target > datetime.now(UTC):
        raise BackupError(f"--time {text}: that is in the future ({iso(target)}; now {iso(datetime.now(UTC))})")
    return target


def _archive_now(remote: Remote, plan: BackupPlan, port: int, leader: str | None,
                 repos: list[Repository], required: bool = False) -> None:
    """Everything committed until now into each reachable repository: a commit and a WAL switch on the leader,
    the segment waited for in each one. Where it does not arrive, that is said and the command goes on; a
    leader that takes no commit stops it when `required` (a restore: before anything changed)."""
    if leader is None:
        remote.err.print(Text("no member leads: the repositories hold what arrived before", style="yellow"))
        return
    switched = remote.run("commit once and switch WAL on the leader", {leader: scripts.switch_wal(port)})[leader]
    segment = [line for line in switched.output.strip().splitlines()[-1:] if WAL_NAME.fullmatch(line)] \
        if switched.ok else []
    if not segment and required:
        raise BackupError(f"{leader} (the leader) took no commit or WAL switch: {switched.error or 'no segment'}; "
                          "nothing was changed (recovery stops only at a commit after the time)")
    if not segment:
        remote.err.print(Text(f"{leader}: no WAL switch ({switched.error or 'no segment named'}): the "
                              "repositories hold what arrived before", style="yellow"))
        return
    live = [r for r in repos if r.host not in remote.unreachable]
    got = remote.run(f"WAL segment {segment[0]} reaches the repositories",
                     {r.host: scripts.wait_wal(plan.stanza, segment[0]) for r in live})
    for r in live:
        if not got[r.host].ok:
            remote.err.print(Text(f"repo{r.index} ({r.host}): the newest WAL did not arrive: {got[r.host].error}",
                                  style="red"))


def _leader(remote: Remote, members: list[str]) -> str | None:
    for m in members:
        if m in remote.unreachable:
            continue
        got = remote.run("ask Patroni who leads", {m: scripts.patroni_leader()})[m]
        if got.ok:
            try:
                found = [x["Member"] for x in json.loads(got.output) if x.get("Role") == "Leader"]
            except (json.JSONDecodeError, TypeError, KeyError):
                continue
            if found:
                return str(found[0])
    return None  # Patroni stopped everywhere (e.g. a restore that stopped half-way): it restores on the first


def restore_cluster(path: Path, text: str, wanted: tuple[str, ...], yes: bool, out: Console, err: Console) -> int:
    target = _target(text)
    inv, plan, db = _load(path)
    members = [m.host for m in plan.members]
    repos = _chosen(plan, wanted)
    t_all = time.monotonic()
    remote = _connect(inv, [*members, *(r.host for r in plan.repositories)], err)
    try:
        lost = [m for m in members if m in remote.unreachable]
        if lost:
            raise BackupError(f"restore needs every db member reachable ({', '.join(lost)} is not): a member left "
                              "out would come back later on the timeline the restore abandons")
        leader = _leader(remote, members)
        if leader is None:
            err.print(Text(f"no member leads (Patroni stopped?): the restore goes on {members[0]}", style="yellow"))
        # A commit after the target (recovery stops only at one, even in an idle database), and everything
        # committed until now in the repositories.
        every = list(plan.repositories)
        _archive_now(remote, plan, db.port, leader, every, required=True)
        catalogs, problems = _catalogs(remote, plan, every)
        for line in problems:
            err.print(Text(f"{line} (if it holds a backup taken after the time, a replica must not be cloned from "
                           "it: see docs/backups.md)", style="red"))
        chosen = covering([c for c in catalogs if c.index in {r.index for r in repos}], target)
        if chosen is None:
            asked = [c for c in catalogs if c.index in {r.index for r in repos}]
            ranges = "; ".join(describe_range(c) for c in asked) or "no repository asked for could be read"
            raise BackupError(f"--time {iso(target)} is outside every recoverable range: {ranges}")
        data_dir = f"/var/lib/postgresql/{PG_VERSION}/{db.scope}"
        was_leader = leader
        leader = leader or members[0]
        others = [m for m in members if m != leader]
        # A backup taken after the target lies on the timeline the restore abandons: new replicas must not be
        # cloned from it (PostgreSQL refuses to follow the new timeline from there), so one is taken first.
        # (Every repository counts: a replica's restore takes the newest backup of the first one that has any.)
        rebase = [c for c in catalogs if any(b.stop > target for b in c.backups)]
        if not yes and not click.confirm(
                f"Restore {db.scope} to {iso(target)} from repo{chosen.index} ({chosen.host})? Patroni stops on "
                f"{', '.join(members)}; {leader}'s data is restored, the others are cloned again. Every write "
                f"after {iso(target)} is gone from the cluster.", err=True):
            err.print(Text("not restored: nothing was changed", style="yellow"))
            return 1
        err.print(Text(f"restoring {db.scope} to {iso(target)} from repo{chosen.index} ({chosen.host}) on {leader}",
                       style="cyan"))
        t0 = time.monotonic()
        resume = ("Patroni is stopped on every member; start it again (`systemctl start patroni`) to go back "
                  "to the cluster as it was, or run the restore again")
        remote.must("stop Patroni on the replicas", {m: scripts.stop_patroni() for m in others})
        remote.must("stop Patroni on the leader", {leader: scripts.stop_patroni()}, resume)
        remote.must("remove the cluster from etcd", {leader: scripts.forget_cluster(db.scope, was_leader or leader)},
                    resume)
        got = remote.must(f"restore {leader} to the target, recover and promote",
                          {leader: scripts.restore_member(plan.stanza, chosen.index, data_dir, pg_time(target),
                                                          db.port)},
                          "the cluster is down: fix the cause and run the restore again (docs/backups.md)")
        recovered = got[leader].output.strip().splitlines()
        remote.must("set the replicas' data aside", {m: scripts.set_aside(data_dir) for m in others})
        rest = {m.host: f"{m.mesh_address}:{db.patroni_port}" for m in plan.members}
        remote.must(f"start Patroni on {leader} (leader)", {leader: scripts.start_patroni()})
        remote.must(f"{leader} leads", {leader: scripts.wait_role(rest[leader], "primary", 300)
                                        + " && " + scripts.wait_writable(db.port, 300)})
        for c in rebase:
            remote.must(f"full backup of the restored cluster into repo{c.index} (the newest was taken after the "
                        "target)", {c.host: scripts.backup(plan.stanza, c.index, "full")})
        remote.must("start Patroni on the replicas", {m: scripts.start_patroni() for m in others})
        remote.must("the replicas are cloned and replicate",
                    {m: scripts.wait_role(rest[m], "replica", 1800) for m in others})
        remote.must("remove the replicas' old data", {m: scripts.drop_aside(data_dir) for m in others})
        for line in recovered:
            _say(out, f"  {line}")
        _say(out, f"restored {db.scope} to {iso(target)} from repo{chosen.index} ({chosen.host}) in "
                  f"{time.monotonic() - t0:.1f} s (command {time.monotonic() - t_all:.1f} s); leader {leader}, "
                  f"replicas {', '.join(others) or 'none'}")
        return 0
    finally:
        remote.close()


def restore_drill(path: Path, host: str, text: str | None, query: str | None, keep: bool,
                  out: Console, err: Console) -> int:
    target = _target(text) if text else None
    inv, plan, db = _load(path)
    repo = plan.repository(host)
    if repo is None:
        names = ", ".join(r.host for r in plan.repositories)
        raise BackupError(f"--into {host}: not a backup host; a drill restores on a repository host from its own "
                          f"repository, without touching the cluster (one of: {names})")
    members = [m.host for m in plan.members]
    remote = _connect(inv, [host, *members], err)
    try:
        if host in remote.unreachable:
            raise BackupError(f"--into {host}: {remote.unreachable[host]}")
        # What is committed now, in this repository (and a commit after a --time, for recovery to stop at):
        # the only change the drill makes to the cluster.
        _archive_now(remote, plan, db.port, _leader(remote, members), [repo])
        catalogs, problems = _catalogs(remote, plan, [repo])
        if problems:
            raise BackupError("; ".join(problems))
        span = catalogs[0].recoverable
        if span is None:
            raise BackupError(f"repo{repo.index} ({host}) has nothing to restore: {catalogs[0].status}")
        if target is not None and not span[0] <= target <= span[1]:
            raise BackupError(f"--time {iso(target)} is outside {describe_range(catalogs[0])}")
        t0 = time.monotonic()
        got = remote.must(f"restore drill on {host}",
                          {host: scripts.drill(plan.stanza, repo.index, pg_time(target) if target else None, query,
                                               APP_DATABASE, keep)})
        took = time.monotonic() - t0
    finally:
        remote.close()
    recovered, _, answer = got[host].output.partition(scripts.SEP)
    last = next((line.split("log time", 1)[1].strip() for line in recovered.splitlines() if "log time" in line),
                "unknown")
    _say(out, f"restore drill on {host} from repo{repo.index} "
              f"({'to ' + iso(target) if target else 'to the newest WAL'}): {took:.1f} s; "
              f"last transaction recovered at {last}")
    if query:
        _say(out, f"query: {query}")
        _say(out, answer.strip())
    if keep:
        _say(out, f"kept running on {host}: runuser -u postgres -- psql -h {scripts.DRILL_DIR} -p "
                  f"{scripts.DRILL_PORT} -d {APP_DATABASE}; stop it with: runuser -u postgres -- {scripts.PG_CTL} "
                  f"-D {scripts.DRILL_DIR} stop")
    return 0

