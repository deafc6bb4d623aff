"""The dns placement for people (`plan --offline`): what each public name answers and which check decides it,
the servers a registrar must be told about, and how the answers change with each loss."""

from __future__ import annotations

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import units
from deploykit.services.contract import Section, listed
from deploykit.services.dns.placement import DnsPlan
from deploykit.services.dns.tier import answers_without, entries_text


def describe_dns(inv: Inventory, plan: DnsPlan) -> tuple[Section, ...]:
    check = f"every {plan.check_interval} s, timeout {plan.check_timeout} s"
    names = ", ".join(n.fqdn for n in plan.names)
    rows = tuple((names if i == 0 else "", f"{e.address} ({e.site}, {e.provider})", e.health_url,
                  f"{plan.ttl} s" if i == 0 else "") for i, e in enumerate(plan.entries))
    answers = Section(f"DNS answers (PowerDNS LUA ifurlup on every dns host, checks {check}; when all or none "
                      f"answer 200: those accepting connections on port {plan.check_port}, or all)",
                      ("names", "answer with", "while this answers 200", "TTL"), rows)
    servers = Section(f"DNS servers of {plan.zone} (tell the registrar: NS records and their glue)",
                      ("NS", "glue address", "host"),
                      tuple((s.fqdn, str(s.address), f"{s.host} ({s.provider})") for s in plan.servers))
    changed = losses(inv, plan)
    return (answers, servers, changed) if changed.rows else (answers, servers)


def losses(inv: Inventory, plan: DnsPlan) -> Section:
    """A row per loss that changes the servers or the answers (losses that change nothing are counted)."""
    rows, unchanged = [], 0
    for level in inv.failure_domains:
        for unit, lost in units(inv, level).items():
            a = answers_without(plan, frozenset(h.name for h in lost))
            if len(a.servers) == len(plan.servers) and not a.dropped:
                unchanged += 1
                continue
            rows.append((f"{level} {unit}", listed([s.label for s in a.servers]),
                         entries_text(a.entries) if a.entries else "none left (every address, all lost)"))
    title = "DNS after each loss (servers left, what the names answer once the checks see it)"
    if unchanged:
        title += f"; {unchanged} other loss(es) change nothing"
    return Section(title, ("lost", "dns servers left", "answers"), tuple(rows))
