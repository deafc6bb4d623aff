"""The lb tier's rule: some site keeps a load balancer (its VIP moves to a surviving peer)."""

from __future__ import annotations

from deploykit.plan.verdict import Status, Verdict
from deploykit.services.contract import TierContext
from deploykit.services.lb.placement import lb_sites


def judge_lb(ctx: TierContext) -> Verdict | None:
    if not ctx.inv.with_role("lb"):
        return None
    serving, lost_sites, thinned = [], [], []
    for site in lb_sites(ctx.placement):
        alive = [m for m in site.members if m.name not in ctx.gone]
        if not site.members:
            continue
        if alive:
            serving.append(site.site)
            if len(alive) < len(site.members):
                thinned.append(f"{site.site} VIP {site.vip} moves to {alive[0].name}")
        else:
            lost_sites.append(site.site)
    if not serving:
        return Verdict("lb", Status.DOWN, f"{ctx.what} leaves no load balancer in any site",
                       "add lb hosts (and a vip) in a site of another provider")
    parts = []
    if thinned:
        parts.append("; ".join(thinned))
    if lost_sites:
        parts.append(f"VIP of {', '.join(lost_sites)} is gone (DNS must stop sending users there); "
                     f"{', '.join(serving)} still serve")
    if not parts:
        return Verdict("lb", Status.UP, f"all sites' load balancers unaffected ({len(serving)} site(s))")
    return Verdict("lb", Status.UP, "; ".join(parts))
