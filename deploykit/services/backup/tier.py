"""The backup tier's rule: a repository left to back up into and restore from.

Losing every repository loses no data the database still holds, but takes away every point-in-time recovery
and every new backup: the resilience proof counts that as the tier down, so an inventory needs repositories
in two failure-domain units. The apply (level "host") only says so: a deploy is not stopped because the
backup hosts are away."""

from __future__ import annotations

from deploykit.plan.verdict import Status, Verdict, left
from deploykit.services.backup.placement import backup_plan
from deploykit.services.contract import TierContext


def judge_backup(ctx: TierContext) -> Verdict | None:
    p = backup_plan(ctx.placement)
    names = [r.host for r in p.repositories]
    if not names:
        return None
    alive = left(names, ctx.gone)
    n, what = len(names), ctx.what
    queue = ctx.inv.services.backup.archive_queue_max_mib
    if not alive:
        status = Status.DEGRADED if ctx.level == "host" else Status.DOWN
        return Verdict("backup", status,
                       f"{what} loses every backup repository ({n}): no backup and no point-in-time recovery "
                       f"until one returns; WAL waits in pg_wal up to {queue} MiB, then pgBackRest drops it",
                       "put backup hosts in another provider (at least two repositories in different providers)")
    if len(alive) == n:
        return Verdict("backup", Status.UP, f"all {n} repositories unaffected")
    return Verdict("backup", Status.UP,
                   f"{len(alive)} of {n} repositories left: backups and restores go on from them; WAL for the "
                   f"lost ones waits in pg_wal up to {queue} MiB; beyond that pgBackRest drops the waiting WAL "
                   "(for every repository: point-in-time recovery has a gap until the next backup)")
