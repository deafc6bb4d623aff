"""The cache tier's rule: a Redis server left, and a sentinel majority to fail over to it."""

from __future__ import annotations

from deploykit.plan.verdict import Status, Verdict, left
from deploykit.services.cache.placement import cache_plan
from deploykit.services.contract import TierContext


def judge_cache(ctx: TierContext) -> Verdict | None:
    p = cache_plan(ctx.placement)
    names = [m.name for m in p.members]
    if not names:
        return None
    what = ctx.what
    alive = left(names, ctx.gone)
    sentinels = left([m.name for m in p.sentinels], ctx.gone)
    n, s, majority = len(names), len(p.sentinels), len(p.sentinels) // 2 + 1
    if not alive:
        return Verdict("cache", Status.DOWN, f"{what} loses all {n} Redis servers",
                       "add a cache host in another failure domain")
    if len(alive) == n:
        return Verdict("cache", Status.UP, f"all {n} Redis servers and sentinels unaffected")
    if len(sentinels) < majority:
        return Verdict("cache", Status.DOWN,
                       f"{what}: if the Redis master was there, no failover happens: {len(sentinels)} of {s} "
                       f"sentinels left, electing a failover leader needs {majority}",
                       "run sentinels (cache role) in at least 3 failure domains")
    return Verdict("cache", Status.UP,
                   f"{len(alive)} of {n} Redis servers left; {len(sentinels)} of {s} sentinels can fail over "
                   f"(quorum {p.quorum})")
