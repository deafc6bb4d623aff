"""The db tier's rule: a member left, etcd quorum for Patroni's lock, and a synchronous standby outside the
loss (worst case: the primary was among the lost hosts)."""

from __future__ import annotations

from deploykit.plan.verdict import Status, Verdict, left
from deploykit.services.contract import TierContext
from deploykit.services.db.placement import db_plan

DCS = "etcd"  # the tier Patroni keeps its leader lock in


def judge_db(ctx: TierContext) -> Verdict | None:
    p = db_plan(ctx.placement)
    names = [m.name for m in p.members]
    if not names:
        return None
    what, etcd = ctx.what, ctx.earlier.get(DCS)
    alive = left(names, ctx.gone)
    lost = len(names) - len(alive)
    n = len(names)
    if not alive:
        return Verdict("db", Status.DOWN, f"{what} loses all {n} PostgreSQL members",
                       f"add a db host (with the etcd role if etcd needs a member there) in another {ctx.level}")
    if etcd is not None and etcd.status is Status.DOWN:
        return Verdict("db", Status.DOWN, f"{what}: Patroni cannot hold its leader lock without etcd quorum, so "
                       "the primary steps down to read-only", "fix etcd's placement (see the etcd row)")
    if etcd is None:
        return Verdict("db", Status.DOWN, "no etcd: Patroni has no place for its leader lock", "add etcd hosts")
    if p.synchronous and lost > p.sync_standbys and lost > 0 and n > 1:
        return Verdict("db", Status.DOWN,
                       f"{what} may take the primary and all {p.sync_standbys} synchronous standby(s) at once; "
                       "Patroni will not promote a replica that may miss acknowledged commits",
                       "spread db hosts so that no failure domain holds more than one")
    if lost == 0:
        return Verdict("db", Status.UP, f"all {n} members unaffected")
    if len(alive) == 1:
        note = (" writes go on without a synchronous standby until one returns" if p.synchronous
                else " no replica left")
        return Verdict("db", Status.DEGRADED,
                       f"{what} leaves 1 of {n} PostgreSQL members, which Patroni promotes if needed;{note}",
                       "add a db host in a third failure domain to keep a replica")
    extra = (f"a synchronous standby outside it has every acknowledged commit ({p.sync_standbys} per commit)"
             if p.synchronous else "asynchronous replication: commits not yet replicated may be lost")
    status = Status.UP if p.synchronous else Status.DEGRADED
    return Verdict("db", status, f"{len(alive)} of {n} members left; {extra}")
