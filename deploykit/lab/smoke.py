"""A smoke test of a deployed chirp on the lab: post through one site's VIP, read it back through another's.

With dns hosts in the inventory, the entry addresses are what the lab's own DNS servers answer for the
domain (as a user's browser would find them), asked of every dns server. Only talks to lab servers
(10.77.0.0/16, on the lab's own bridges).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from deploykit.inventory.model import Inventory


@dataclass
class SmokeResult:
    ok: bool
    lines: list[str]


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5) -> tuple[int, Any]:
    """(status, JSON body); (0, None) when nothing answered (refused, timed out)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except OSError:
        return 0, None


def resolve(inv: Inventory) -> tuple[list[str], list[str], bool]:
    """(entry addresses, report lines, ok) from the lab's DNS servers, or the VIPs without dns hosts."""
    from deploykit.lab.dnsquery import DnsQueryError, query
    from deploykit.plan import plan_placement
    from deploykit.services.dns.placement import dns_plan

    plan = dns_plan(plan_placement(inv))
    if plan is None:
        return [str(s.vip) for s in inv.sites.values() if s.vip is not None], [], True
    lines, answers = [], []
    for ns in plan.servers:
        try:
            got = query(str(ns.address), plan.zone)
        except DnsQueryError as exc:
            lines.append(f"{plan.zone} A @{ns.address} ({ns.host}): no answer ({exc})")
            continue
        addresses = [str(a) for a in got.addresses]
        answers.append(addresses)
        lines.append(f"{plan.zone} A @{ns.address} ({ns.host}): {', '.join(addresses) or 'EMPTY'} (TTL {got.ttl})")
    agreed = bool(answers) and all(sorted(a) == sorted(answers[0]) for a in answers) and bool(answers[0])
    if not agreed:
        lines.append("the dns servers do not all answer with the same, non-empty set of addresses")
    return (answers[0] if answers else []), lines, agreed


def smoke_test(inv: Inventory) -> SmokeResult:
    entries, dns_lines, dns_ok = resolve(inv)
    vips = [f"http://{a}" for a in entries]
    lines = [*dns_lines, f"chirp is served at: {', '.join(vips)}"]
    if not dns_ok:
        return SmokeResult(False, lines)
    if len(vips) < 1:
        return SmokeResult(False, [*lines, "no site has a VIP"])
    write, read = vips[0], vips[-1]
    name = f"smoke{int(time.time())}"
    try:
        for vip in vips:
            code, health = http("GET", f"{vip}/healthz")
            lines.append(f"{vip}/healthz -> {code} (served by {(health or {}).get('host', '?')})")
        http("POST", f"{write}/api/users", {"name": name})
        code, post = http("POST", f"{write}/api/posts", {"author": name, "text": "hello from the smoke test"})
        if code != 201 or not isinstance(post, dict):
            return SmokeResult(False, [*lines, f"POST {write}/api/posts -> {code}"])
        code, back = http("GET", f"{read}/api/posts/{post['id']}")
        ok = code == 200 and isinstance(back, dict) and back.get("text") == "hello from the smoke test"
        lines.append(f"posted #{post['id']} via {write}, read back via {read}: {'ok' if ok else f'FAILED ({code})'}")
        return SmokeResult(ok, lines)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return SmokeResult(False, [*lines, f"smoke test failed: {exc}"])
