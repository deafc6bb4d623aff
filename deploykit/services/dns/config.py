"""One dns host's configuration: PowerDNS Authoritative 4.7 (Debian bookworm), bind backend, LUA records.

The zone is the same on every dns host (each is a primary; nothing is transferred): SOA, the NS records
`ns1`.. with their addresses (glue), and one LUA record per public name (the apex, `www`, `services.dns.names`),
all with the same Lua (PowerDNS prepends `return ` unless the code starts with `;`):

    ;local healthy = ifurlup('https://chirp.example:443/healthz', {'10.10.0.100', ...}, OPTIONS)
     local reachable = ifportup(443, {'10.10.0.100', ...}, OPTIONS)
     if #healthy < 3 then return healthy end return reachable
    OPTIONS = {selector='all', backupSelector='all', timeout='2'}

ifurlup fetches the URL from each address in turn (curl's `--resolve` of the URL's host to that address, so
the request carries the domain as its TLS server name and Host header, like a browser's) and answers with the
addresses whose answer is HTTP 200 (pdns/minicurl.cc: anything else, or no answer within `timeout`, is a
failure). HTTPS, because plain HTTP only answers a redirect there (HAProxy, services/lb). PowerDNS 4.7 does not
verify the certificate in these checks (MiniCurl::getURL's `verify` defaults to false and lua-record.cc passes
none; measured in tests/apps/test_dns_pdns.py), so a check never fails on the certificate itself; with
certificates from deploykit's CA, the dns hosts trust that CA all the same (state.py: the system's CA store,
which libcurl reads), for a PowerDNS that verifies and for an operator's curl on the host.

What PowerDNS 4.7.3 does, read in its source (pdns/lua-record.cc, minicurl.cc, packethandler.cc) and docs,
and how this record deals with it:

- Checks run in one background thread, all at once every `lua-health-checks-interval` seconds (default 5;
  setting since 4.3); a round waits for its slowest check, so a dead address (no answer: curl gives up after
  the `timeout` option, default 2 s) stretches the round to `timeout`. The first query for a check registers
  it and starts the thread; until that check has run once, its address counts as DOWN (PowerDNS issue #9529:
  checks only start at the first resolve). So the first answers after a start are the all-down answer below.
  The `failOnIncompleteCheck` option (SERVFAIL until checked) and the docs' warning about first answers only
  came with 5.0.0. deploykit warms a started server up before it moves on (state.py).
- One failed check marks an address down, one success up again: there is no threshold in 4.7.
  `minimumFailures` and a per-check `interval` came with PR #14996 in 5.0.0; in 4.7 an unknown option is only
  part of the check's identity and does nothing. The knobs 4.7 has: `lua-health-checks-interval` (global),
  and per check `timeout`, `source`, `stringmatch`, `useragent`, `selector`, `backupSelector`.
- When every address of the set is down, the answer comes from `backupSelector` (default `random`: ONE
  address) over all of them (since 4.2 for both ifurlup and ifportup). We use `selector='all'` and
  `backupSelector='all'`: normally every healthy site; if none is healthy, every site rather than one at
  random. (5.1 limits the backup to the first non-empty address set; there is one set here.)
- Every site fails its health check at once when a shared dependency fails over (chirp's /healthz reads the
  Patroni primary and pings the Redis master: a failover takes 5-20 s). Then ifurlup's answer would be every
  address, a lost provider's included. Hence the second check, ifportup on the same addresses (a TCP connect
  to HAProxy's port): when ifurlup answers every address (all healthy, or none), the answer is those whose
  load balancer accepts connections, and every address only when none does. Both checks run on every query,
  so both are registered and warm from the first one on.
- A check nobody asked for in `lua-health-checks-expire-delay` seconds (default 3600, since 4.3) is dropped;
  the next query then finds it unchecked again (the all-down answer, dead sites included). A quiet hour is
  normal for a lab, so the delay is a year here: the checks of an address removed from the zone go on until
  the next restart, one request per interval.
- LUA answers never enter the packet cache (packethandler.cc sets noCache for them), so `cache-ttl` delays
  nothing; resolvers keep an answer for the record's TTL (`services.dns.ttl`).

Timing (defaults): checks every 2 s with a 2 s timeout. A site whose health answers non-200 leaves the answer
within one interval plus the request (measured locally, tests/apps/test_dns_pdns.py: 0.5-0.7 s); one that
stops answering at all within interval + timeout (measured: 3.9-4.2 s); it is back within about one interval
of answering again (measured: 1.7-2.1 s). Resolvers then serve their cached answer for up to the TTL. The
price of the short interval without a threshold: one answer slower than 2 s drops a site for a round (the
others answer meanwhile; with every site down at once the answer falls back as above).

Checks with the same URL or port and options are one check (PowerDNS keys them on address, URL and options),
so every public name shares them: two requests per entry address per interval from each dns host.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.dns.placement import DnsPlan, dns_plan
from deploykit.services.dns.serial import serial_path, zone_serial
from deploykit.services.lb.tls import ca_certificate

DNS_PORT = 53
LOOPBACK = IPv4Address("127.0.0.1")  # the warm-up wait asks the local server there
CONFIG_DIR = "/etc/powerdns"
# Read after Debian's pdns.d/bind.conf (include-dir files are read in name order, a later value wins): our
# `launch=bind` replaces its `launch+=bind` (both would start two bind backends: "Refusing to launch multiple
# backends with the same name"), and `bind-config` points at our own named.conf, not Debian's.
DROPIN = f"{CONFIG_DIR}/pdns.d/zz-deploykit.conf"
DEPLOYKIT_DIR = f"{CONFIG_DIR}/deploykit"
NAMED_CONF = f"{DEPLOYKIT_DIR}/named.conf"
# The NS records and the servers' addresses change only with the inventory; the registrar's delegation (the
# parent zone's NS and glue, usually a day or two) is what resolvers mostly follow anyway.
NS_TTL = 3600
# A check unused this long is dropped by PowerDNS (then the next query sees it unchecked): a year.
CHECKS_EXPIRE_S = 365 * 24 * 3600
# No secondaries exist (every server is a primary), so refresh/retry/expire only matter to a secondary
# someone adds; the minimum is the negative-caching TTL (RFC 2308), kept as short as the answers' TTL.
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 1_209_600
HOSTMASTER = "hostmaster"  # the SOA's mailbox: hostmaster@<domain>
# Debian's local CA certificates (update-ca-certificates adds each *.crt here to the system's store).
LOCAL_CA_DIR = "/usr/local/share/ca-certificates"


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    owner: str  # relative to the zone: "@", "www", "ns1"
    ttl: int | None  # None: the zone's $TTL
    rtype: str  # NS, A, LUA
    content: str  # as written in the zone file


@dataclass(frozen=True, slots=True)
class Zone:
    origin: str  # the domain, without the final dot
    ttl: int  # $TTL: the public names' TTL
    mname: str  # the SOA's primary name server (ns1)
    rname: str  # the SOA's mailbox, hostmaster.<domain>
    refresh: int
    retry: int
    expire: int
    minimum: int
    records: tuple[ZoneRecord, ...]

    @property
    def digest(self) -> str:
        """What the serial numbers: every record and SOA field (the serial itself is not part of it)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DnsHostConfig:
    host: str
    listen: tuple[str, ...]  # address:port PowerDNS binds (the host's address and 127.0.0.1, never 0.0.0.0)
    zone: Zone
    serial: int
    zone_file: str
    named_conf: str
    check_interval: int  # lua-health-checks-interval
    check_timeout: int
    checks_expire_s: int  # lua-health-checks-expire-delay
    names: tuple[str, ...]  # the public names (fully qualified), asked by the warm-up wait
    # deploykit's CA for the deployment (None: the user's own certificate is served), trusted system-wide.
    ca_certificate: Secret | None
    ca_file: str  # /usr/local/share/ca-certificates/deploykit-<deployment>.crt


def lua_string(value: str) -> str:
    """A Lua single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def zone_string(value: str) -> str:
    """A zone-file (RFC 1035) double-quoted character string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def answer_lua(url: str, port: int, addresses: tuple[IPv4Address, ...], timeout: int) -> str:
    """The Lua of a public name: the addresses whose `url` answers 200; when that is all of them or none, those
    accepting TCP connections on `port` (and all of them if none does). Never an empty answer."""
    listed = "{" + ", ".join(lua_string(str(a)) for a in addresses) + "}"
    options = f"{{selector='all', backupSelector='all', timeout='{timeout}'}}"
    return (f";local healthy = ifurlup({lua_string(url)}, {listed}, {options}) "
            f"local reachable = ifportup({port}, {listed}, {options}) "
            f"if #healthy < {len(addresses)} then return healthy end return reachable")


def build_zone(plan: DnsPlan) -> Zone:
    if not plan.entries:
        raise ValueError(f"zone {plan.zone}: no site has an entry address (lb hosts) to answer with")
    lua = zone_string(answer_lua(plan.check_url, plan.check_port, tuple(e.address for e in plan.entries),
                                 plan.check_timeout))
    records = (
        *(ZoneRecord("@", NS_TTL, "NS", f"{ns.fqdn}.") for ns in plan.servers),
        *(ZoneRecord(ns.label, NS_TTL, "A", str(ns.address)) for ns in plan.servers),
        *(ZoneRecord(n.label, None, "LUA", f"A {lua}") for n in plan.names),
    )
    return Zone(
        origin=plan.zone, ttl=plan.ttl, mname=plan.servers[0].fqdn, rname=f"{HOSTMASTER}.{plan.zone}",
        refresh=SOA_REFRESH, retry=SOA_RETRY, expire=SOA_EXPIRE, minimum=plan.ttl, records=records,
    )


def dns_config(ctx: ConfigContext, host: Host, serial: Callable[[Zone], int] | None = None) -> DnsHostConfig:
    """`serial`: the zone's serial (default: the counter stored beside the inventory, see serial.py), asked
    once per run: every host of the run gets the same number."""
    plan = dns_plan(ctx.placement)
    if plan is None or host.name not in {s.host for s in plan.servers}:
        raise ValueError(f"{host.name} is not a dns server")
    zone = ctx.shared("dns.zone", lambda: build_zone(plan))
    number = serial or (lambda z: zone_serial(serial_path(ctx.inv), z.digest))
    return DnsHostConfig(
        host=host.name,
        listen=(f"{host.address}:{DNS_PORT}", f"{LOOPBACK}:{DNS_PORT}"),
        zone=zone,
        serial=ctx.shared(f"dns.serial.{zone.digest}", lambda: number(zone)),
        zone_file=f"{DEPLOYKIT_DIR}/{plan.zone}.zone",
        named_conf=NAMED_CONF,
        check_interval=plan.check_interval,
        check_timeout=plan.check_timeout,
        checks_expire_s=CHECKS_EXPIRE_S,
        names=tuple(n.fqdn for n in plan.names),
        ca_certificate=ca_certificate(ctx),
        ca_file=f"{LOCAL_CA_DIR}/deploykit-{ctx.inv.name}.crt",
    )
