"""The dns service's rendered files in a real PowerDNS Authoritative (Debian's pdns-server 4.7 + bind backend),
on this machine, without the lab: every query and every health check stays on 127.0.0.0/8.

A three-site inventory whose entry addresses (the sites' VIPs) are 127.0.0.x addresses where small HTTPS
servers (a certificate from a throw-away deploykit CA, which this machine does not trust: PowerDNS 4.7's checks
do not verify it) answer the app's health path with 200, 503 or nothing at all, or refuse connections; pdns_server runs
in the foreground with the files deploykit renders for a dns host (its listen address moved to a free
127.0.0.x address and port, its paths into a temporary directory), each installed through its own validate
command, and `dig` asks it.
Skipped (with the reason) where PowerDNS or dig is not installed: `apt-get install pdns-server
pdns-backend-bind dnsutils` (bin/test does).
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.execute.steps import CANDIDATE_SUFFIX, install_file
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.dns import state as dns
from deploykit.services.dns.config import DnsHostConfig, dns_config
from deploykit.services.lb.tls import issue_ca, issue_edge, new_key

PDNS_SERVER = shutil.which("pdns_server") or shutil.which("pdns_server", path="/usr/sbin:/sbin")
PDNS_CONTROL = shutil.which("pdns_control")
PDNSUTIL = shutil.which("pdnsutil")
DIG = shutil.which("dig")
MISSING = [name for name, path in (("pdns_server", PDNS_SERVER), ("pdns_control", PDNS_CONTROL),
                                   ("pdnsutil", PDNSUTIL), ("dig", DIG)) if path is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"{', '.join(MISSING)} not installed: apt-get install pdns-server pdns-backend-bind dnsutils")

ZONE = "chirp.test"
NAMES = (ZONE, f"www.{ZONE}", f"api.{ZONE}")
SITES = ("fra1", "rbx1", "ams1")


# --- the sites' entries: HTTPS servers answering the health path ---------------------------------------------


def edge_tls(tmp: Path, addresses: tuple[str, ...]) -> ssl.SSLContext:
    """A server context with an edge certificate for the zone's names from a new deploykit CA (as HAProxy's)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    ca_key, key = new_key(), new_key()
    ca = issue_ca(ca_key, "dns-local", now)
    cert = issue_edge(ca_key, ca, key, NAMES, tuple(IPv4Address(a) for a in addresses), now)
    pem = tmp / "edge.pem"
    pem.write_text(cert + key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem)
    return context


@dataclass
class Entries:
    """One HTTPS server per entry address, all on `port`: each answers /healthz as its state says, or is
    stopped (`kill`: its connections are refused, as a lost site's)."""

    addresses: tuple[str, ...]
    port: int
    tls: ssl.SSLContext
    state: dict[str, str] = field(default_factory=dict)  # "ok" (200), "fail" (503), "hang" (never answers)
    servers: dict[str, ThreadingHTTPServer] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    seen: set[tuple[str | None, str | None]] = field(default_factory=set)  # (TLS server name, Host header)
    _sni: threading.local = field(default_factory=threading.local)

    def start(self) -> None:
        def server_name(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, context: ssl.SSLContext) -> None:
            self._sni.name = name

        self.tls.sni_callback = server_name
        for a in self.addresses:
            self.state.setdefault(a, "ok")
            self.revive(a)

    def revive(self, address: str) -> None:
        entries = self

        class Health(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                entries.seen.add((getattr(entries._sni, "name", None), self.headers.get("Host")))
                state = entries.state[address]
                if state == "hang":
                    entries.release.wait(30)
                    return
                code = 200 if state == "ok" and self.path == "/healthz" else 503
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((address, self.port), Health)
        # the handshake in the request's own thread (on its first read), never in the accepting one
        server.socket = self.tls.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.servers[address] = server

    def set(self, address: str, state: str) -> None:
        self.state[address] = state

    def kill(self, address: str) -> None:
        server = self.servers.pop(address)
        server.shutdown()
        server.server_close()

    def stop(self) -> None:
        self.release.set()
        for a in list(self.servers):
            self.kill(a)


# --- a PowerDNS with deploykit's files -------------------------------------------------------------------------


@dataclass
class Pdns:
    root: Path
    address: str
    port: int
    cfg: DnsHostConfig
    proc: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> str:
        return f"{PDNS_CONTROL} --config-dir={self.root}"

    def install(self, cfg: DnsHostConfig) -> None:
        """Each rendered file through its own validate command, as the apply installs it."""
        self.cfg = cfg
        files = {f.path: f for f in dns.desired(cfg).files}  # deploykit's CA is not installed on this machine
        zone, named, dropin = files[cfg.zone_file], files[cfg.named_conf], files[dns.DROPIN]
        # the adjustments: listen on our address and port (in cfg), paths in root, the control socket in root
        for path, content, validate in ((cfg.zone_file, zone.content, zone.validate),
                                        (cfg.named_conf, named.content, named.validate),
                                        (str(self.root / "pdns.conf"),
                                         dropin.content + f"socket-dir={self.root}\n", dropin.validate)):
            Path(path + CANDIDATE_SUFFIX).write_text(content)
            done = subprocess.run(["sh", "-c", install_file(path, validate)], capture_output=True, text=True)
            assert done.returncode == 0, f"{path}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        with open(self.root / "pdns.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [str(PDNS_SERVER), f"--config-dir={self.root}", "--daemon=no", "--guardian=no", "--disable-syslog",
                 "--write-pid=no"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.ask(ZONE, "SOA", timeout=1) == []:
            assert self.proc.poll() is None, (self.root / "pdns.log").read_text()
            assert time.monotonic() < deadline, "PowerDNS did not answer within 20 s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ask(self, name: str, rtype: str = "A", timeout: int = 2) -> list[str]:
        """dig +short's answer lines (empty: no answer at all)."""
        done = subprocess.run([str(DIG), "+short", f"+time={timeout}", "+tries=1", "-p", str(self.port),
                               f"@{self.address}", name, rtype], capture_output=True, text=True, timeout=10)
        return [line for line in done.stdout.splitlines() if line and not line.startswith(";")]

    def addresses(self, name: str = ZONE) -> set[str]:
        return set(self.ask(name))

    def dig(self, *args: str) -> str:
        return subprocess.run([str(DIG), "-p", str(self.port), f"@{self.address}", *args], capture_output=True,
                              text=True, timeout=10).stdout

    def serial(self) -> int:
        (soa,) = self.ask(ZONE, "SOA")
        return int(soa.split()[2])

    def shell(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)


def free_base() -> tuple[int, int]:
    """A 127.0.0.x base address (x .. x+3 unused by anything we can see) and a free port on it."""
    for _ in range(50):
        base = random.randint(100, 240)
        port = random.randint(20000, 60000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind((f"127.0.0.{base}", port))
                t.bind((f"127.0.0.{base}", port))
            return base, port
        except OSError:
            continue
    raise RuntimeError("no free 127.0.0.x address and port found")


def inventory_text(base: int, https_port: int) -> str:
    """Three sites at three providers; their VIPs are the entries .base+1 .. .base+3; fra1-data-1 (.base) is the
    dns server under test, the others are only named (NS and glue)."""
    vip = {s: f"127.0.0.{base + i}" for i, s in enumerate(SITES, start=1)}
    lines = ["version: 1", "name: dns-local", f"domain: {ZONE}", "failure_domains: [provider, site]", "sites:"]
    lines += [f"  {s}: {{provider: {p}, vip: {vip[s]}}}" for s, p in zip(SITES, ("hetzner", "ovh", "leaseweb"),
                                                                           strict=True)]
    lines += ["hosts:"]
    for i, s in enumerate(SITES, start=1):
        lines.append(f"  {s}-web-1: {{address: 127.0.{i}.11, site: {s}, roles: [lb, app]}}")
        data = f"127.0.0.{base}" if s == "fra1" else f"127.0.{i}.21"
        lines.append(f"  {s}-data-1: {{address: {data}, site: {s}, roles: [dns]}}")
    lines += ["services:", f"  lb: {{https_port: {https_port}}}", "  app: {health: /healthz}",
              "  dns: {ttl: 30, names: [api]}"]
    return "\n".join(lines) + "\n"


def host_config(inv: Inventory, root: Path, address: str, port: int) -> DnsHostConfig:
    ctx = ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "unused"))
    cfg = dns_config(ctx, inv.host("fra1-data-1"))  # the serial: the real counter, beside the inventory
    return dataclasses.replace(cfg, listen=(f"{address}:{port}",), zone_file=str(root / f"{ZONE}.zone"),
                               named_conf=str(root / "named.conf"))


@dataclass
class Setup:
    pdns: Pdns
    entries: Entries
    inventory: Path
    vips: tuple[str, ...]

    def config(self) -> DnsHostConfig:
        return host_config(load_inventory(self.inventory), self.pdns.root, self.pdns.address, self.pdns.port)


def make_setup(tmp: Path) -> Setup:
    base, port = free_base()
    vips = tuple(f"127.0.0.{base + i}" for i in range(1, 4))
    tls = edge_tls(tmp, vips)
    for _ in range(20):  # a port free on the three entry addresses
        entries = Entries(vips, random.randint(20000, 60000), tls)
        try:
            entries.start()
            break
        except OSError:
            entries.stop()
    else:
        raise RuntimeError("no free port for the health servers")
    inventory = tmp / "dns-local.yml"
    inventory.write_text(inventory_text(base, entries.port))
    address = f"127.0.0.{base}"
    cfg = host_config(load_inventory(inventory), tmp, address, port)
    return Setup(Pdns(tmp, address, port, cfg), entries, inventory, vips)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Setup]:
    """A PowerDNS of its own, installed, not started."""
    s = make_setup(tmp_path)
    try:
        s.pdns.install(s.pdns.cfg)
        yield s
    finally:
        s.pdns.stop()
        s.entries.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One PowerDNS for the tests below, started and warmed up; each test leaves every site healthy (and
    checked so) behind it."""
    s = make_setup(tmp_path_factory.mktemp("pdns"))
    try:
        s.pdns.install(s.pdns.cfg)
        s.pdns.start()
        settled(s)
        yield s
    finally:
        s.pdns.stop()
        s.entries.stop()


def until(what: str, ok: Callable[[], bool], timeout: float) -> float:
    """Seconds until `ok()` held (asked every 0.1 s); fails after `timeout`."""
    t0 = time.monotonic()
    while not ok():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def settled(s: Setup) -> None:
    """The rendered warm-up wait, pointed at this server: one full check round, then answers and serial."""
    wait = dns.warm_up_command(s.pdns.cfg, IPv4Address(s.pdns.address), s.pdns.port)
    done = s.pdns.shell(wait)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the tests ------------------------------------------------------------------------------------------------


def test_the_first_answer_after_a_start_is_every_address_until_the_warm_up_round(fresh: Setup, measure) -> None:
    s = fresh
    s.entries.set(s.vips[1], "fail")
    s.pdns.start()
    # PowerDNS 4.7: no check has run yet, every address counts as down -> backupSelector 'all'
    assert s.pdns.addresses() == set(s.vips)
    t0 = time.monotonic()
    settled(s)
    measure("PowerDNS: warm-up wait after a start (prime, one check round, answers)", f"{time.monotonic() - t0:.1f} s")
    assert s.pdns.addresses() == {s.vips[0], s.vips[2]}
    assert s.pdns.addresses(f"www.{ZONE}") == s.pdns.addresses(f"api.{ZONE}") == {s.vips[0], s.vips[2]}


def test_healthy_sites_are_all_answered_with_ns_glue_and_the_designed_serial(running: Setup) -> None:
    s = running
    for name in NAMES:
        assert s.pdns.addresses(name) == set(s.vips)
    answer = s.pdns.dig("+norec", ZONE, "A")
    assert "flags: qr aa;" in answer and f"{ZONE}.\t\t30\tIN\tA\t" in answer  # authoritative, TTL 30
    assert sorted(s.pdns.ask(ZONE, "NS")) == [f"ns1.{ZONE}.", f"ns2.{ZONE}.", f"ns3.{ZONE}."]
    ns = s.pdns.dig("+norec", ZONE, "NS")
    assert f"ns1.{ZONE}.\t\t3600\tIN\tA\t127.0.3.21" in ns  # glue in the additional section (ams1-data-1)
    assert f"ns2.{ZONE}.\t\t3600\tIN\tA\t{s.pdns.address}" in ns
    assert s.pdns.ask(f"ns3.{ZONE}") == ["127.0.2.21"]
    soa = s.pdns.ask(ZONE, "SOA")
    assert soa == [f"ns1.{ZONE}. hostmaster.{ZONE}. {s.pdns.cfg.serial} 3600 600 1209600 30"]
    assert s.pdns.cfg.serial >= int(time.time()) - 600  # seconds-based: numbered during this test
    assert s.pdns.ask(f"nothing.{ZONE}") == []
    # no zone transfers, no version
    assert "Transfer failed" in s.pdns.dig("AXFR", ZONE)
    assert s.pdns.ask("version.bind", "TXT") == []


def test_checks_fetch_https_with_the_domain_as_server_name_and_host(running: Setup) -> None:
    """ifurlup over https:// with the zone's name (SNI and Host, as a browser's), connected to each VIP; the
    certificate is not one this machine trusts, and the checks pass all the same: PowerDNS 4.7 does not verify
    it (see services/dns/config.py)."""
    assert "ifurlup('https://chirp.test:" in Path(running.pdns.cfg.zone_file).read_text()
    assert running.entries.seen and {sni for sni, _ in running.entries.seen} == {ZONE}
    assert {host for _, host in running.entries.seen} <= {ZONE, f"{ZONE}:{running.entries.port}"}


def test_the_labs_own_dns_client_reads_powerdns_answers(running: Setup) -> None:
    """deploykit.lab.dnsquery (lab smoke, the e2e client) against the real server: same addresses as dig, the
    zone's TTL, authoritative; a name outside the zone gets no address."""
    from deploykit.lab.dnsquery import query

    got = query(running.pdns.address, ZONE, port=running.pdns.port)
    assert {str(a) for a in got.addresses} == set(running.vips) == running.pdns.addresses(ZONE)
    assert (got.ttl, got.rcode, got.authoritative) == (30, 0, True)
    assert query(running.pdns.address, f"nothing.{ZONE}", port=running.pdns.port).addresses == ()


def test_a_site_answering_503_leaves_the_answer_and_comes_back(running: Setup, measure) -> None:
    s = running
    cfg = s.pdns.cfg
    bound = cfg.check_interval + cfg.check_timeout + 1  # the documented bound (config.py): 5 s
    s.entries.set(s.vips[2], "fail")
    gone = until("a 503 site dropped", lambda: s.pdns.addresses() == {s.vips[0], s.vips[1]}, bound + 1)
    s.entries.set(s.vips[2], "ok")
    back = until("the site answered again", lambda: s.pdns.addresses() == set(s.vips), bound + 1)
    measure("PowerDNS: a site answering 503 leaves the answer / answering 200 again comes back",
            f"{gone:.1f} s / {back:.1f} s (checks every {cfg.check_interval} s, timeout {cfg.check_timeout} s, "
            f"bound {bound} s)")
    assert gone <= bound and back <= bound
    # loglevel=6 (the rendered drop-in): each transition is in the log, for an operator's journalctl
    log = (s.pdns.root / "pdns.log").read_text()
    for state in ("DOWN", "UP"):  # 4.7 writes "LUA record monitoring" for URL checks, "Lua ..." for TCP ones
        assert f"LUA record monitoring declaring {s.vips[2]} {state} for URL " in log, log[-2000:]


def test_a_site_that_stops_answering_leaves_within_interval_plus_timeout(running: Setup, measure) -> None:
    s = running
    cfg = s.pdns.cfg
    bound = cfg.check_interval + cfg.check_timeout + 1
    s.entries.set(s.vips[0], "hang")  # a dead server: the connection opens, no answer ever comes
    gone = until("a silent site dropped", lambda: s.pdns.addresses() == {s.vips[1], s.vips[2]}, bound + 2)
    s.entries.set(s.vips[0], "ok")
    back = until("the silent site back", lambda: s.pdns.addresses() == set(s.vips), 2 * bound)
    measure("PowerDNS: a site that stops answering leaves the answer / comes back", f"{gone:.1f} s / {back:.1f} s")
    assert gone <= bound + 1


def test_when_every_site_fails_the_answer_is_the_reachable_ones_never_empty(running: Setup, measure) -> None:
    s = running
    bound = s.pdns.cfg.check_interval + s.pdns.cfg.check_timeout + 1
    v0, v1, v2 = s.vips
    seen: list[set[str]] = []

    def answer(expected: set[str]) -> Callable[[], bool]:
        def ok() -> bool:
            seen.append(s.pdns.addresses())
            return seen[-1] == expected
        return ok

    s.entries.set(v0, "fail")
    s.entries.set(v1, "fail")
    until("two sites failing", answer({v2}), bound + 1)
    s.entries.set(v2, "fail")  # e.g. a database failover: every site's /healthz fails at once
    until("every site failing: those accepting connections (all)", answer({v0, v1, v2}), bound + 1)
    s.entries.kill(v0)  # ... and one site is gone: its address refuses connections
    t = until("every site failing, one gone: the two reachable", answer({v1, v2}), bound + 1)
    measure("PowerDNS: every site failing its health check, one gone -> only the reachable ones", f"{t:.1f} s")
    for name in NAMES:
        assert s.pdns.addresses(name) == {v1, v2}
    s.entries.kill(v1)
    s.entries.kill(v2)
    until("nothing reachable: every address", answer({v0, v1, v2}), bound + 1)
    assert all(seen), "an empty answer"
    # back to healthy: one site first (then an answer of every address can only mean every site is up)
    s.entries.set(v0, "ok")
    s.entries.revive(v0)
    until("one site back", answer({v0}), bound + 1)
    for vip in (v1, v2):
        s.entries.set(vip, "ok")
        s.entries.revive(vip)
    until("every site back", answer({v0, v1, v2}), bound + 1)
    assert all(seen), "an empty answer"


def test_a_changed_zone_is_reloaded_in_place_with_a_larger_serial_and_warm_checks(running: Setup) -> None:
    s = running
    bound = s.pdns.cfg.check_interval + s.pdns.cfg.check_timeout + 1
    s.entries.set(s.vips[1], "fail")
    until("a failing site dropped", lambda: s.pdns.addresses() == {s.vips[0], s.vips[2]}, bound + 1)
    before = s.pdns.serial()
    assert before == s.pdns.cfg.serial
    assert s.config().serial == before  # the same content: the same serial, however often it is rendered
    # a new TTL: new content, a new serial from the counter beside the inventory
    s.inventory.write_text(s.inventory.read_text().replace("dns: {ttl: 30,", "dns: {ttl: 45,"))
    cfg = s.config()
    assert cfg.serial > before
    s.pdns.install(cfg)
    reload = s.pdns.shell(dns.reload_zone_command(ZONE, s.pdns.control))
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "parsed into memory" in reload.stdout
    assert s.pdns.serial() == cfg.serial
    # no restart: the checks kept their state, the failing site stays out from the first query on
    assert s.pdns.addresses() == {s.vips[0], s.vips[2]}
    assert f"{ZONE}.\t\t45\tIN\tA\t" in s.pdns.dig("+norec", ZONE, "A")
    # a zone the running server does not serve: nothing to reload (a restart follows such a change)
    assert s.pdns.shell(dns.reload_zone_command("other.test", s.pdns.control)).returncode == 0
    # a zone file PowerDNS rejects (never installed so: its check comes first) fails the reload
    good = Path(cfg.zone_file).read_text()
    Path(cfg.zone_file).write_text(good + "broken line here\n")
    rejected = s.pdns.shell(dns.reload_zone_command(ZONE, s.pdns.control))
    assert rejected.returncode != 0 and "[rejected]" in rejected.stdout
    assert s.pdns.serial() == cfg.serial  # still the zone loaded before
    Path(cfg.zone_file).write_text(good)
    assert s.pdns.shell(dns.reload_zone_command(ZONE, s.pdns.control)).returncode == 0
    assert s.pdns.serial() == cfg.serial
    s.entries.set(s.vips[1], "ok")
    until("the site back", lambda: s.pdns.addresses() == set(s.vips), bound + 1)
