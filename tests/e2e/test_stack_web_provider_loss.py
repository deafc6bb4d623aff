"""Issue 11 end to end, from a user's side: a client that finds chirp through the lab's own DNS servers (honouring
the TTL, asking the name servers in order, trying the answered addresses in order, as a browser does) writes
posts steadily while every server of one provider is powered off. Nothing acknowledged may be lost, and the
longest write outage must stay within 30 s + the TTL.

Runs after test_stack_web (it reuses its `stack` fixture); destructive, so last. DNS queries go only to the lab's
dns hosts, HTTPS only to the addresses they answer (all in 10.77.0.0/16).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.dnsquery import DnsQueryError, query
from deploykit.lab.lab import Lab
from deploykit.plan import plan_placement
from deploykit.services.dns.placement import dns_plan
from tests.e2e.conftest import LAB_INVENTORY
from tests.e2e.test_stack_web import https, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INVENTORY = load_inventory(LAB_INVENTORY)
PLAN = dns_plan(plan_placement(INVENTORY))
assert PLAN is not None, "inventories/lab.yml has no dns hosts"
DATA = tuple(h.name for h in INVENTORY.with_role("db"))
OUTAGE_BUDGET_S = 30 + PLAN.ttl


@dataclass
class Client:
    """A user's browser and resolver in one: resolve (cached for the TTL), then POST to the first address that
    answers; every acknowledged post is recorded with its id."""

    name_servers: tuple[str, ...]
    author: str
    acked: list[tuple[float, int]] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    resolved: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    answered_by: list[str] = field(default_factory=list)  # the name server of each `resolved` entry
    _cache: tuple[str, ...] = ()
    _expires: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def resolve(self) -> tuple[str, ...]:
        if time.monotonic() < self._expires and self._cache:
            return self._cache
        for ns in self.name_servers:
            try:
                got = query(ns, PLAN.zone, timeout=1.0)
            except DnsQueryError:
                continue
            if got.addresses:
                self._cache = tuple(str(a) for a in got.addresses)
                self._expires = time.monotonic() + got.ttl
                self.resolved.append((time.monotonic(), self._cache))
                self.answered_by.append(ns)
                return self._cache
        return self._cache  # no name server answered: keep using what was known, as resolvers do

    def write_once(self, n: int) -> None:
        for address in self.resolve():
            code, body = https("POST", f"https://{address}/api/posts", {"author": self.author, "text": f"post {n}"},
                               timeout=2)
            if code == 201 and isinstance(body, dict):
                self.acked.append((time.monotonic(), int(body["id"])))
                return
        self.failed.append(time.monotonic())

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            self.write_once(n)
            time.sleep(0.05)

    def __enter__(self) -> Client:
        for address in self.resolve():
            if https("POST", f"https://{address}/api/users", {"name": self.author})[0] in (201, 409):
                break
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def longest_outage(self, since: float) -> float:
        times = [t for t, _ in self.acked if t >= since]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=float("inf"))


def leader(lab: Lab) -> str:
    for via in DATA:
        r = lab.ssh(via, "patronictl -c /etc/patroni/config.yml list -f json", timeout=15)
        if r.returncode == 0:
            for m in json.loads(r.stdout):
                if m.get("Role") == "Leader" and m.get("State") == "running":
                    return str(m["Member"])
    raise AssertionError("no Patroni leader")


def wait_healthy(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(https("GET", f"https://{e.address}/healthz", timeout=2)[0] == 200 for e in PLAN.entries):
            return
        time.sleep(1)
    raise AssertionError("the sites did not all come back healthy")


def readable(address: str, pid: int) -> bool:
    """The post is there. Only a definite answer counts: 404 is a lost post; an error or a timeout (the site
    busy with the returning servers) is asked again, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        code = https("GET", f"https://{address}/api/posts/{pid}", timeout=5)[0]
        if code in (200, 404) or time.monotonic() > deadline:
            return code == 200
        time.sleep(0.5)


def lose_provider(lab: Lab, provider: str, name_servers: tuple[str, ...], author: str, measure) -> None:
    victims = [h.name for h in INVENTORY.hosts if h.provider == provider]
    survivor = next(e for e in PLAN.entries if e.provider != provider)
    with Client(name_servers, author) as client:
        time.sleep(5)
        assert client.acked, "the client wrote nothing before the loss"
        t_kill, wall_kill = time.monotonic(), time.time()
        lab.kill(victims)
        killed_in = time.monotonic() - t_kill
        try:
            time.sleep(OUTAGE_BUDGET_S + 15)
        finally:
            lab.start(victims)
        time.sleep(5)
    outage = client.longest_outage(since=t_kill - 1)
    wait_healthy()  # the lost servers just came back: read once every site serves again
    lost = [pid for _, pid in client.acked if not readable(survivor.address, pid)]
    measure(f"DNS client, provider {provider} powered off ({len(victims)} servers)",
            f"{len(client.acked)} posts acknowledged, {len(lost)} lost, longest write outage {outage:.1f} s "
            f"(budget {OUTAGE_BUDGET_S} s), {len(client.failed)} failed attempts")
    after = [(round(t - t_kill, 1), ns, addrs) for (t, addrs), ns in zip(client.resolved, client.answered_by,
                                                                        strict=True)
             if t > t_kill + 15 and t < t_kill + OUTAGE_BUDGET_S + 10]
    lost_entry = {str(e.address) for e in PLAN.entries if e.provider == provider}
    held = [entry for entry in after if set(entry[2]) & lost_entry]
    assert lost == [], f"{len(lost)} acknowledged posts are gone: {lost[:10]}"
    assert outage <= OUTAGE_BUDGET_S, f"writes stopped for {outage:.1f} s"
    wait_healthy()
    if held:
        # Known issue, seen in 2 of 3 full CI runs since the mesh (never when this test runs alone): a surviving
        # dns host still answered the lost site's address 27 s after the loss (s after the kill, name server,
        # answer below), while a database failover overlapped. No post was lost and the outage stayed within
        # budget (asserted above); test_stack_dns checks the drop itself strictly with steady queries. Reported
        # in the closing note; not understood yet (PowerDNS's checks of the dead address vs the live sites'
        # health during the failover), so it is not hidden behind a longer budget.
        # What the surviving dns hosts' checks saw (PowerDNS logs each DOWN/UP transition, loglevel=6): when the
        # lost address was declared down, and whether the live sites' checks failed meanwhile.
        checks = {ns.host: lab.ssh(ns.host, f"journalctl -u pdns --since @{int(wall_kill) - 5} --no-pager -o "
                                             "short-precise | grep -i 'record monitoring'", timeout=30).stdout
                  for ns in PLAN.servers if ns.provider != provider}
        pytest.xfail(f"dns answer still held {lost_entry} after the loss (servers killed in {killed_in:.1f} s, "
                     f"at {wall_kill:.1f}): {held}; the checks' transitions: {checks}")


def test_losing_the_provider_of_the_patroni_leader_loses_no_acknowledged_post(stack: Lab, measure) -> None:  # noqa: F811
    wait_healthy()
    provider = INVENTORY.host(leader(stack)).provider
    name_servers = tuple(str(s.address) for s in PLAN.servers)
    lose_provider(stack, provider, name_servers, "dns-client-1", measure)


def test_losing_the_provider_of_the_clients_first_name_server(stack: Lab, measure) -> None:  # noqa: F811
    """The client asks ns1 first; its provider goes dark with it (the resolver must move on to ns2)."""
    wait_healthy()
    name_servers = tuple(str(s.address) for s in PLAN.servers)
    lose_provider(stack, PLAN.servers[0].provider, name_servers, "dns-client-2", measure)
