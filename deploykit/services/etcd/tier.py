"""etcd's tier rule: a majority of members must be left, or Patroni loses its leader lock."""

from __future__ import annotations

from deploykit.plan.verdict import Status, Verdict, left
from deploykit.services.contract import TierContext
from deploykit.services.etcd.placement import etcd_plan


def judge_etcd(ctx: TierContext) -> Verdict | None:
    p = etcd_plan(ctx.placement)
    names = [m.name for m in p.members]
    if not names:
        return None
    alive = left(names, ctx.gone)
    n, q, what = len(names), p.quorum, ctx.what
    if len(alive) < q:
        return Verdict("etcd", Status.DOWN,
                       f"{what} loses etcd quorum: {len(alive)} of {n} members left, a majority needs {q}",
                       "spread etcd over more failure domains so that no single one holds half of its members "
                       "(e.g. one member per provider over 3 providers)")
    if len(alive) == n:
        return Verdict("etcd", Status.UP, f"all {n} members unaffected")
    return Verdict("etcd", Status.UP, f"{len(alive)} of {n} members keep quorum ({q} needed)")
