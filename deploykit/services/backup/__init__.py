"""backup: pgBackRest (Debian's pgbackrest 2.45) repositories on the backup hosts, WAL archived into every one
of them from whichever PostgreSQL member is primary, scheduled full and differential backups, restores.

The service runs on two kinds of host: each `backup` host keeps one encrypted repository and runs the
scheduled backups into it (pgBackRest asks every member which one is primary, so a failover changes
nothing); each `db` host pushes its WAL to every repository and restores from them. Archiving itself is set in
Patroni's dynamic config by the db service, from archiving.py here. Commands (`deploykit backup`, `backups`,
`restore`) are in operations.py, their shell in scripts.py. docs/backups.md has the why and the by-hand way.

Phase: after db (a stanza is created and checked against a running primary).
"""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.services.backup.config import (
    ARCHIVER_FACT,
    FACTS,
    SECRETS,
    BackupHostConfig,
    archiving_problem,
    backup_config,
)
from deploykit.services.backup.placement import NAME, BackupPlan, backup_plan, plan_backup
from deploykit.services.backup.state import PACKAGES, REPOSITORY_PACKAGES, TIMERS, desired
from deploykit.services.backup.tier import judge_backup
from deploykit.services.contract import ConfigContext, PlacementContext, Section, Service, TierContext, listed

# Why a repository's key is never rotated (`deploykit secrets rotate`).
CIPHER_NOT_ROTATED = ("a repository's encryption key cannot change under its backups: give the host a new "
                      "repository (a new backup host) and retire the old one once its backups have expired")


class Backup(Service):
    name = NAME
    tier_column = 70
    secrets = SECRETS
    unrotated = {SECRETS[0]: CIPHER_NOT_ROTATED}
    packages = tuple(dict.fromkeys((*PACKAGES, *REPOSITORY_PACKAGES)))
    host_facts = FACTS
    # A host that keeps neither a repository nor a member stops the schedule (the timers) it may still run.
    retire_units = TIMERS

    def runs_on(self, host: Host) -> bool:
        # Members push WAL and restore: pgBackRest and its SSH trust are on every db host too.
        return host.has(NAME) or host.has("db")

    def place(self, ctx: PlacementContext) -> BackupPlan:
        return plan_backup(ctx.inv)

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_backup(ctx)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        p, svc = backup_plan(placement), inv.services.backup
        if not p.members:
            return ()
        rows: tuple[tuple[str, ...], ...]
        if not p.repositories:
            rows = (("-", "no backup hosts", "no backup, no point-in-time recovery: give two hosts in different "
                     "providers the backup role"),)
        else:
            rows = tuple((f"repo{r.index}", f"{r.host} ({r.provider})",
                          f"full {svc.full}, diff {svc.diff}; keeps {svc.retention_full} full, "
                          f"{svc.retention_diff} diff; encrypted") for r in p.repositories)
            rows += (("WAL", listed([m.host for m in p.members]),
                      f"archived from the primary every {svc.archive_timeout} s at least; up to "
                      f"{svc.archive_queue_max_mib} MiB wait for an unreachable repository, then are dropped "
                      "for every repository"),)
        return (Section("Backups (pgBackRest)", ("repository", "host", "schedule"), rows),)

    def config(self, ctx: ConfigContext, host: Host) -> BackupHostConfig:
        return backup_config(ctx, host)

    def desired(self, cfg: BackupHostConfig) -> RoleState:
        return desired(cfg)

    def check(self, ctx: ConfigContext, host: Host) -> tuple[str, ...]:
        cfg = backup_config(ctx, host)
        found = []
        if cfg.missing:
            found.append(f"pgBackRest's SSH keys of {listed(list(cfg.missing))} are not known yet (read when they "
                         "are reached): left out until then")
        if (problem := archiving_problem(ctx.fact(host.name, ARCHIVER_FACT),
                                         ctx.inv.services.backup.archive_queue_max_mib)) is not None:
            found.append(problem)
        return tuple(found)


SERVICE = Backup()
