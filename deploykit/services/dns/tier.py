"""The dns tier's rule: some dns server keeps answering, and its answers keep a live site.

After a loss, the surviving servers answer with the entries whose load balancers survive (a VIP moves to a
surviving lb of its site); the lost units' entries leave the answer once their checks fail. Down when no dns
server survives (the domain stops resolving once resolvers' caches expire) or when no entry survives
(the answer would be every address, all dead: the fallback of an all-down check). Degraded when a single
server is left: it answers, but is now the domain's single point of failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.plan.verdict import Status, Verdict
from deploykit.services.contract import TierContext, listed
from deploykit.services.dns.placement import DnsPlan, Entry, NameServer, dns_plan


@dataclass(frozen=True, slots=True)
class Answers:
    """What the dns tier does without some hosts."""

    servers: tuple[NameServer, ...]  # those left
    entries: tuple[Entry, ...]  # those the answers keep
    dropped: tuple[Entry, ...]  # those the answers lose


def answers_without(plan: DnsPlan, gone: frozenset[str]) -> Answers:
    servers = tuple(s for s in plan.servers if s.host not in gone)
    kept = tuple(e for e in plan.entries if any(h not in gone for h in e.hosts))
    dropped = tuple(e for e in plan.entries if e not in kept)
    return Answers(servers, kept, dropped)


def entries_text(entries: tuple[Entry, ...]) -> str:
    return listed([f"{e.address} ({e.site})" for e in entries])


def judge_dns(ctx: TierContext) -> Verdict | None:
    plan = dns_plan(ctx.placement)
    if plan is None:
        return None
    a = answers_without(plan, ctx.gone)
    n, what, zone = len(plan.servers), ctx.what, plan.zone
    if not a.servers:
        return Verdict("dns", Status.DOWN,
                       f"{what} loses every dns server ({listed([s.label for s in plan.servers])}): {zone} stops "
                       "resolving once resolvers' cached answers expire",
                       "give the dns role to hosts at two or more providers (one per provider)")
    if not a.entries:
        return Verdict("dns", Status.DOWN,
                       f"{what} leaves no site entry to answer {zone} with: the answer falls back to every "
                       f"address, all lost ({entries_text(plan.entries)})",
                       "add lb hosts (and a vip) in a site of another provider")
    left = listed([s.label for s in a.servers])
    answer = f"{zone} answers {entries_text(a.entries)}"
    if a.dropped:
        answer += f" (drops {entries_text(a.dropped)})"
    if len(a.servers) == 1 < n:
        return Verdict("dns", Status.DEGRADED,
                       f"{what} leaves one dns server ({left}): {answer}; it is now the domain's only server",
                       "give the dns role to hosts at more providers, so that any loss leaves two")
    if len(a.servers) == n and not a.dropped:
        return Verdict("dns", Status.UP, f"all {n} dns servers unaffected; {answer}")
    return Verdict("dns", Status.UP, f"{left} answer ({len(a.servers)} of {n}); {answer}")
