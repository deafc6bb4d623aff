"""A dns host: PowerDNS Authoritative (Debian's pdns-server 4.7.3, bind backend) serving the domain's zone.

Files, each checked by PowerDNS's own tools before it replaces the live one:

- the zone file: `pdnsutil check-zone` against a throw-away configuration whose named.conf lists only the
  candidate (check-zone needs a configured backend; 4.7 checks record syntax and zone rules there, not the
  Lua code, which the warm-up wait below exercises). A changed zone is loaded by the running server with
  `pdns_control bind-reload-now` (no restart: the health checks keep their state, see config.py);
- named.conf (our own, not Debian's): the same check with the candidate as `bind-config`;
- the pdns.d drop-in: `pdns_server --config=check` on a copy of it (4.7 parses it strictly and refuses an
  unknown setting; the drop-in is complete on its own: launch, bind-config, listen addresses, LUA).

- deploykit's CA certificate (when it issues the edge certificate), as a local CA of the system's store
  (`update-ca-certificates` after a change): the health checks fetch https:// URLs (see config.py).

A change of named.conf or the drop-in restarts PowerDNS. The hosts change one at a time (the service's
rollout), each waited for: after a start, every address counts as down until its first check has run
(4.7 has no way to wait for it), so the wait primes the checks with a query, lets one full round pass
(interval + timeout + 1 s) and then requires every public name to answer with addresses, and the SOA to
carry the new serial. Between a start and that first round the server answers every site (backupSelector
'all'), dead ones included: the rollout keeps that window to one server at a time.
"""

from __future__ import annotations

import shlex
from ipaddress import IPv4Address

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.dns.config import DEPLOYKIT_DIR, DNS_PORT, DROPIN, LOOPBACK, DnsHostConfig
from deploykit.services.render import render

# bind9-dnsutils (dig): the warm-up wait asks the local server (and an operator can check it in place).
PACKAGES = ("pdns-server", "pdns-backend-bind", "bind9-dnsutils")
# From ca-certificates, which every Debian server image has (the lab's too, bare or not): not installed here.
UPDATE_CA_CERTIFICATES = "update-ca-certificates"
UNIT = "pdns"  # Debian's pdns.service (runs as pdns, /etc read-only: it only reads our files)
WARM_UP_TIMEOUT_S = 90


def check_zone_command(zone: str) -> str:
    """`pdnsutil check-zone` of the candidate zone file `{path}` alone (a throw-away config and named.conf)."""
    named = shlex.quote(f'zone "{zone}" {{ type master; file "%s"; }};\\n')
    named = named.replace("{", "{{").replace("}", "}}")  # the command is a format string ({path})
    return ('d=$(mktemp -d) && printf "launch=bind\\nbind-config=%s/named.conf\\n" "$d" > "$d/pdns.conf"'
            f" && printf {named} {{path}} > \"$d/named.conf\""
            f' && pdnsutil --config-dir="$d" check-zone {shlex.quote(zone)}; rc=$?; rm -rf "$d"; exit $rc')


def check_named_command(zone: str) -> str:
    """The candidate named.conf `{path}` loads the zone (the live zone file, installed before it)."""
    return ('d=$(mktemp -d) && printf "launch=bind\\nbind-config=%s\\n" {path} > "$d/pdns.conf"'
            f' && pdnsutil --config-dir="$d" check-zone {shlex.quote(zone)}; rc=$?; rm -rf "$d"; exit $rc')


# The candidate drop-in `{path}` as a whole configuration: every setting known to this PowerDNS, with its
# backend module loaded.
CHECK_DROPIN = 'd=$(mktemp -d) && cp {path} "$d/pdns.conf" && pdns_server --config=check --config-dir="$d"' \
               '; rc=$?; rm -rf "$d"; exit $rc'


def reload_zone_command(zone: str, control: str = "pdns_control") -> str:
    """Load the changed zone into the running server. Nothing to do if none runs (it reads the file when it
    starts) or if the running one does not serve the zone yet ("no such domain": Debian's configuration
    before our first start, or a new domain; our drop-in or named.conf changed with it, so a restart follows,
    and the warm-up wait checks the serial either way). bind-reload-now exits 0 even when it rejected the
    zone, so its answer is what tells."""
    return (f"if {control} rping >/dev/null 2>&1; then out=$({control} bind-reload-now {shlex.quote(zone)} 2>&1);"
            f" echo \"$out\"; echo \"$out\" | grep -q -e 'parsed into memory' -e 'no such domain'; fi")


def warm_up_command(cfg: DnsHostConfig, server: IPv4Address = LOOPBACK, port: int = DNS_PORT) -> str:
    """Prime every public name's checks, wait one full check round, then require addresses for each name and
    the new serial in the SOA."""
    dig = f"dig +short +time=1 +tries=1 -p {port} @{server}"
    names = [shlex.quote(n) for n in cfg.names]
    prime = "; ".join(f"{dig} {n} A >/dev/null" for n in names)
    settle = cfg.check_interval + cfg.check_timeout + 1
    serial = f"[ \"$({dig} {shlex.quote(cfg.zone.origin)} SOA | awk '{{print $3}}')\" = {cfg.serial} ]"
    answers = " && ".join(f"{dig} {n} A | grep -qE '^[0-9.]+$'" for n in names)
    return f"{prime}; sleep {settle}; {serial} && {answers}"


def desired(cfg: DnsHostConfig) -> RoleState:
    ctx = {"host": cfg.host, "zone": cfg.zone.origin}
    zone_file = render("dns/zone.j2", zone=cfg.zone, serial=cfg.serial)
    named_conf = render("dns/named.conf.j2", zone_file=cfg.zone_file, **ctx)
    dropin = render("dns/pdns.conf.j2", named_conf=cfg.named_conf, listen=cfg.listen,
                    check_interval=cfg.check_interval, checks_expire_s=cfg.checks_expire_s, **ctx)
    trusted = () if cfg.ca_certificate is None else (
        ManagedFile(cfg.ca_file, cfg.ca_certificate.reveal(), after_change=UPDATE_CA_CERTIFICATES),)
    return RoleState(
        role="dns",
        packages=PACKAGES,
        directories=(Directory(DEPLOYKIT_DIR),),
        files=(
            ManagedFile(cfg.zone_file, zone_file, validate=check_zone_command(cfg.zone.origin),
                        after_change=reload_zone_command(cfg.zone.origin)),
            ManagedFile(cfg.named_conf, named_conf, validate=check_named_command(cfg.zone.origin), notify=(UNIT,)),
            ManagedFile(DROPIN, dropin, validate=CHECK_DROPIN, notify=(UNIT,)),
            *trusted,
        ),
        services=(Unit(UNIT, enabled=True, running=True),),
        waits=(Wait(f"PowerDNS answers {', '.join(cfg.names)} after a full health-check round",
                    warm_up_command(cfg), timeout_s=WARM_UP_TIMEOUT_S),),
    )
