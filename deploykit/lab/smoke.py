"""A smoke test of a deployed chirp on the lab: post through one site's VIP, read it back through another's.

With dns hosts in the inventory, the entry addresses are what the lab's own DNS servers answer for the
domain (as a user's browser would find them), asked of every dns server. Every request goes over HTTPS to the
domain's name, connected to an entry address (as curl's --resolve: the name is the TLS server name and the Host
header), trusting deploykit's CA for the deployment (or, with the user's own certificate, the system's CAs);
plain HTTP must answer with a redirect to HTTPS. Only talks to lab servers (10.77.0.0/16, on the lab's own
bridges).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from http import client as httpclient
from typing import Any
from urllib.parse import urlsplit

from deploykit.inventory.model import Inventory


@dataclass
class SmokeResult:
    ok: bool
    lines: list[str]


@dataclass(frozen=True)
class Answer:
    status: int  # 0: nothing answered (refused, timed out, TLS failed)
    body: Any  # the JSON body of a 2xx answer, else None
    location: str | None  # a redirect's Location
    error: str = ""  # the start of a non-2xx answer's body (HAProxy's page or the app's JSON error): why


def client_context(inv: Inventory) -> ssl.SSLContext:
    """What a client of this deployment trusts: deploykit's CA for it (from the inventory's secrets store), or,
    when the user's own certificate is served, the system's CAs."""
    if inv.services.lb.tls.own:
        return ssl.create_default_context()
    from deploykit.secrets_store import SecretStore
    from deploykit.services.lb.tls import deployment_ca

    return ssl.create_default_context(cadata=deployment_ca(inv, SecretStore(inv, create_key=False)))


def request(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5, *,
            context: ssl.SSLContext | None = None, connect_to: str | None = None) -> Answer:
    """One request, never following a redirect. `connect_to`: the address to connect to instead of looking the
    URL's host up (which stays the TLS server name and the Host header); `context`: for https:// URLs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    conn: httpclient.HTTPConnection
    if https:
        conn = _Https(host, port, connect_to or host, context or ssl.create_default_context(), timeout)
    else:
        conn = _Http(host, port, connect_to or host, timeout)
    data = json.dumps(body).encode() if body is not None else None
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else "") or "/", body=data,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, httpclient.HTTPException) as exc:
        return Answer(0, None, None, f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
    if 200 <= resp.status < 300:
        return Answer(resp.status, json.loads(raw or b"null"), None)
    return Answer(resp.status, None, resp.getheader("Location"), " ".join(raw[:300].decode(errors="replace").split()))


def http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 5, *,
         context: ssl.SSLContext | None = None, connect_to: str | None = None) -> tuple[int, Any]:
    """(status, JSON body); (0, None) when nothing answered (refused, timed out, TLS refused)."""
    answer = request(method, url, body, timeout, context=context, connect_to=connect_to)
    return answer.status, answer.body


class _Http(httpclient.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _Https(httpclient.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address, self._tls = address, context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


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


def site_url(inv: Inventory, scheme: str = "https") -> str:
    """The domain's URL on the load balancers' HTTPS (or HTTP) port."""
    lb = inv.services.lb
    port = lb.https_port if scheme == "https" else lb.http_port
    return f"{scheme}://{inv.domain}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")


def smoke_test(inv: Inventory) -> SmokeResult:
    entries, dns_lines, dns_ok = resolve(inv)
    base, plain = site_url(inv), site_url(inv, "http")
    lines = [*dns_lines, f"chirp is served at {base} by: {', '.join(entries)}"]
    if not dns_ok:
        return SmokeResult(False, lines)
    if len(entries) < 1:
        return SmokeResult(False, [*lines, "no site has a VIP"])
    write, read = entries[0], entries[-1]
    name = f"smoke{int(time.time())}"
    try:
        tls = client_context(inv)
        ok = True
        for address in entries:
            code, health = http("GET", f"{base}/healthz", context=tls, connect_to=address)
            lines.append(f"{base}/healthz at {address} -> {code} (served by {(health or {}).get('host', '?')})")
            moved = request("GET", f"{plain}/healthz", connect_to=address)
            redirected = moved.status in (301, 308) and (moved.location or "").startswith(f"{base}/")
            lines.append(f"{plain}/healthz at {address} -> {moved.status} {moved.location or ''}".rstrip()
                         + ("" if redirected else " (expected a redirect to https)"))
            ok = ok and code == 200 and redirected
        http("POST", f"{base}/api/users", {"name": name}, context=tls, connect_to=write)
        code, post = http("POST", f"{base}/api/posts", {"author": name, "text": "hello from the smoke test"},
                          context=tls, connect_to=write)
        if code != 201 or not isinstance(post, dict):
            return SmokeResult(False, [*lines, f"POST {base}/api/posts at {write} -> {code}"])
        code, back = http("GET", f"{base}/api/posts/{post['id']}", context=tls, connect_to=read)
        read_ok = code == 200 and isinstance(back, dict) and back.get("text") == "hello from the smoke test"
        lines.append(f"posted #{post['id']} via {write}, read back via {read}: "
                     f"{'ok' if read_ok else f'FAILED ({code})'}")
        return SmokeResult(ok and read_ok, lines)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return SmokeResult(False, [*lines, f"smoke test failed: {exc}"])
