"""The app and worker tiers' rules: app capacity against `services.app.min_capacity`, and a worker left.

Both count what a loss leaves with `HostGroup.lost`, whose cost is the size of the loss: the resilience proof
judges every host of a `host` failure domain, and a tier of thousands of app hosts must stay linear.
"""

from __future__ import annotations

from deploykit.plan.placement import HostGroup
from deploykit.plan.verdict import Status, Verdict
from deploykit.services.contract import TierContext


def judge_app(ctx: TierContext, app: HostGroup) -> Verdict | None:
    n = len(app)
    if not n:
        return None
    alive = n - app.lost(ctx.gone)
    need, what = ctx.inv.services.app.min_capacity, ctx.what
    if not alive:
        return Verdict("app", Status.DOWN, f"{what} loses all {n} app hosts",
                       "add app hosts in another failure domain")
    share = alive / n
    if share + 1e-9 < need:
        return Verdict("app", Status.DEGRADED,
                       f"{alive} of {n} app hosts left ({share:.0%}), below min_capacity {need:.0%}",
                       "spread app hosts more evenly or add some, so that any loss keeps min_capacity")
    if alive == n:
        return Verdict("app", Status.UP, f"all {n} app hosts unaffected")
    return Verdict("app", Status.UP, f"{alive} of {n} app hosts left ({share:.0%} capacity)")


def judge_worker(ctx: TierContext, workers: HostGroup) -> Verdict | None:
    n = len(workers)
    if not n:
        return None
    alive = n - workers.lost(ctx.gone)
    if not alive:
        return Verdict("worker", Status.DOWN, f"{ctx.what} loses all {n} workers: timelines stop filling",
                       "add worker hosts in another failure domain")
    if alive == n:
        return Verdict("worker", Status.UP, f"all {n} workers unaffected")
    return Verdict("worker", Status.UP, f"{alive} of {n} workers left")
