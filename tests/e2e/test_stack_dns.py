"""Issue 11 end to end: the lab's own authoritative DNS (PowerDNS on the data hosts, ns1..ns3.chirp.lab) answers
with every site whose app answers, and keeps doing so when a whole provider is powered off.

Every DNS query is sent from a lab server to lab servers: `dig` runs on the dns hosts (the dns service installs
it for its own warm-up wait). Named test_stack_dns so that it runs after test_stack_data (whose first apply
must be the session's first) and before test_stack_web; it reuses test_stack_web's `stack` fixture (applies the
inventory, waits for every VIP) and leaves the lab as healthy as it found it.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.plan import plan_placement
from deploykit.services.dns.placement import dns_plan
from tests.e2e.conftest import LAB_INVENTORY
from tests.e2e.test_stack_web import https, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INVENTORY = load_inventory(LAB_INVENTORY)
PLAN = dns_plan(plan_placement(INVENTORY))
assert PLAN is not None, "inventories/lab.yml has no dns hosts"
ZONE = PLAN.zone
SERVERS = {s.host: str(s.address) for s in PLAN.servers}  # dns host -> its address (ns1, ns2, ns3)
VIPS = {e.site: str(e.address) for e in PLAN.entries}
NAMES = tuple(n.fqdn for n in PLAN.names)
DROP_S = 15  # the budget for a lost provider's addresses to leave every answer
RETURN_S = 30  # ... and for them to come back once its servers are started again
ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


def dig(lab: Lab, via: str, server: str, name: str, rtype: str = "A", *extra: str) -> list[str]:
    """The answer's records as `dig +short` prints them, run on lab server `via`; [] if none came."""
    r = lab.ssh(via, f"dig +short +time=2 +tries=1 {' '.join(extra)} @{server} {name} {rtype}", timeout=30)
    return [line for line in r.stdout.splitlines() if line and not line.startswith(";")] if r.returncode == 0 else []


def wait_for(what: str, ok, timeout: float = 90, every: float = 1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = ok()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass(frozen=True)
class Sample:
    at: float  # the lab server's clock (the machine's: lab servers are containers on it)
    server: str
    answers: frozenset[str]
    failed: bool  # dig got no answer at all (timeout, refused, SERVFAIL)


class DigLoop:
    """`dig` of the zone's apex against some dns servers every 0.2 s for `seconds`, run on one lab server."""

    def __init__(self, lab: Lab, via: str, servers: list[str], seconds: int) -> None:
        self.lab, self.via, self.servers, self.seconds = lab, via, servers, seconds
        self.samples: list[Sample] = []
        self.error = ""

    def __enter__(self) -> DigLoop:
        each = " ".join(self.servers)
        cmd = (f"end=$(( $(date +%s) + {self.seconds} )); while [ $(date +%s) -lt $end ]; do for s in {each}; do "
               f"a=$(dig +short +time=1 +tries=1 @$s {ZONE} A 2>&1 | paste -sd, -); "
               f"printf '%s %s %s\\n' \"$(date +%s.%N)\" $s \"$a\"; done; sleep 0.2; done")
        self._thread = threading.Thread(target=self._run, args=(cmd,), daemon=True)
        self._thread.start()
        time.sleep(1)  # the loop is running before anything happens
        return self

    def _run(self, cmd: str) -> None:
        r = self.lab.ssh(self.via, cmd, timeout=self.seconds + 60)
        if r.returncode != 0:
            self.error = f"{r.returncode}: {r.stderr[-500:]}"
        for line in r.stdout.splitlines():
            at, server, *rest = line.split(" ", 2)
            items = (rest[0] if rest else "").split(",")
            answers = frozenset(i for i in items if ADDRESS.match(i))
            self.samples.append(Sample(float(at), server, answers, not answers))

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 90)

    def of(self, server: str, after: float = 0.0) -> list[Sample]:
        return [s for s in self.samples if s.server == server and s.at >= after]


def patroni_leader(lab: Lab) -> str:
    def leader() -> str | None:
        for host in SERVERS:  # the data hosts
            r = lab.ssh(host, "patronictl -c /etc/patroni/config.yml list -f json", timeout=20)
            if r.returncode == 0:
                for m in json.loads(r.stdout):
                    if m.get("Role") == "Leader" and m.get("State") == "running":
                        return str(m["Member"])
        return None

    return wait_for("a running Patroni leader", leader)


def test_every_dns_host_answers_every_site_and_all_agree_on_the_serial(stack: Lab) -> None:  # noqa: F811
    serials: set[str] = set()
    for via in SERVERS:  # each dns host asks every dns host (across providers: the firewall lets DNS in)
        for host, server in SERVERS.items():
            for name in NAMES:
                def every_site(via: str = via, server: str = server, name: str = name) -> list[str] | None:
                    answers = dig(stack, via, server, name)
                    return answers if set(answers) == set(VIPS.values()) else None

                wait_for(f"{via} -> {host}: {name} answers every site", every_site, timeout=30)
            soa = dig(stack, via, server, ZONE, "SOA")
            assert len(soa) == 1, f"{via} -> {host}: no SOA ({soa})"
            serials.add(soa[0].split()[2])
            assert sorted(dig(stack, via, server, ZONE, "NS")) == sorted(f"{s.fqdn}." for s in PLAN.servers)
    assert len(serials) == 1, f"the dns hosts disagree on the serial: {serials}"
    # TCP answers too (truncated answers are retried over TCP); the glue names the hosts' addresses
    first, address = next(iter(SERVERS.items()))
    assert set(dig(stack, first, address, ZONE, "A", "+tcp")) == set(VIPS.values())
    for s in PLAN.servers:
        assert dig(stack, first, address, s.fqdn) == [str(s.address)]


def test_losing_the_patroni_leader_s_provider_drops_its_site_and_brings_it_back(stack: Lab, measure) -> None:  # noqa: F811
    leader = patroni_leader(stack)
    provider = INVENTORY.host(leader).provider
    lost = [h.name for h in INVENTORY.hosts if h.provider == provider]
    lost_vips = {str(e.address) for e in PLAN.entries if e.provider == provider}
    kept_vips = set(VIPS.values()) - lost_vips
    survivors = [h for h in SERVERS if h not in lost]
    via, servers = survivors[0], [SERVERS[h] for h in survivors]

    with DigLoop(stack, via, servers, seconds=DROP_S + 25) as loop:
        t_kill = time.time()
        assert sorted(stack.kill(lost)) == sorted(lost)
    assert not loop.error, loop.error
    assert loop.samples, "the dig loop printed nothing"
    for server in servers:
        after = loop.of(server, t_kill)
        assert after and not any(s.failed for s in after), f"{server} left a query unanswered: " \
                                                           f"{[s for s in after if s.failed][:3]}"
        with_lost = [s.at for s in after if s.answers & lost_vips]
        dropped = (with_lost[-1] - t_kill) if with_lost else 0.0
        measure(f"dns: {server} stops answering {provider}'s address after its servers were killed",
                f"{dropped:.1f} s (never empty; {len(after)} answers)")
        assert dropped <= DROP_S, f"{server} answered {lost_vips} {dropped:.1f} s after the kill"
        assert after[-1].answers == kept_vips

    with DigLoop(stack, via, servers, seconds=RETURN_S + 90) as loop:
        stack.start(lost)
        t_started = time.time()
    assert not loop.error, loop.error
    for server in servers:
        after = loop.of(server, t_started - 120)
        assert not any(s.failed for s in after), f"{server} left a query unanswered"
        assert after[-1].answers == set(VIPS.values()), f"{server} still answers {set(after[-1].answers)}"
        without = [s.at for s in after if not lost_vips <= s.answers]
        back = max(without[-1] - t_started, 0.0) if without else 0.0
        measure(f"dns: {server} answers {provider}'s address again after its servers were started",
                f"{back:.1f} s after they answered SSH")
        assert back <= RETURN_S, f"{server} answered without {lost_vips} {back:.1f} s after the start"

    # the restarted dns host answers again, with every site and the same serial as the others
    (restarted,) = [h for h in lost if h in SERVERS]
    t0 = time.monotonic()
    wait_for(f"{restarted} answers every site", lambda: set(dig(stack, via, SERVERS[restarted], ZONE))
             == set(VIPS.values()), timeout=60)
    measure(f"dns: {restarted} (restarted) answers every site", f"{time.monotonic() - t0:.1f} s after the check")
    serials = {dig(stack, via, a, ZONE, "SOA")[0].split()[2] for a in SERVERS.values()}
    assert len(serials) == 1
    for vip in VIPS.values():  # the lab as the next module expects it: every site serving
        wait_for(f"{vip} healthy", lambda v=vip: https("GET", f"https://{v}/healthz")[0] == 200, timeout=120)
