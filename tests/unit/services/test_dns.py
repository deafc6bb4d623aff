"""Role dns: placement (servers, public names, entry addresses), the zone and its serial, PowerDNS's files (golden),
the tier rule, the firewall and the offline plan's tables.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
Where PowerDNS is installed, the lab's rendered files are also checked by its own tools (pdnsutil, pdns_server).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit.cli import cli
from deploykit.execute.steps import CANDIDATE_SUFFIX, install_file
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import analyse_resilience, plan_placement
from deploykit.plan.desired import Directory, Unit
from deploykit.plan.verdict import Status
from deploykit.secret import Secret
from deploykit.services import SERVICES, service_named
from deploykit.services.base.config import base_config
from deploykit.services.contract import ConfigContext, FirewallRule, Rollout, TierContext
from deploykit.services.dns import SERVICE as DNS
from deploykit.services.dns import state as dns
from deploykit.services.dns.config import (
    CHECKS_EXPIRE_S,
    DROPIN,
    DnsHostConfig,
    answer_lua,
    build_zone,
    dns_config,
    lua_string,
    zone_string,
)
from deploykit.services.dns.placement import DnsPlan, dns_plan
from deploykit.services.dns.serial import SerialError, next_serial, serial_path, zone_serial
from deploykit.services.dns.tier import judge_dns
from deploykit.services.render import render

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "dns"
DNS_HOSTS = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")
SERIAL = 1_764_441_000
LAB_VIPS = "{'10.77.1.100', '10.77.2.100', '10.77.3.100'}"
OPTIONS = "{selector='all', backupSelector='all', timeout='2'}"
LAB_LUA = (f"\";local healthy = ifurlup('https://chirp.lab:443/healthz', {LAB_VIPS}, {OPTIONS}) "
           f"local reachable = ifportup(443, {LAB_VIPS}, {OPTIONS}) "
           "if #healthy < 3 then return healthy end return reachable\"")


def context(inv: Inventory) -> ConfigContext:
    return ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "s3cr3t-" + s))


def lab_inventory() -> Inventory:
    return load_inventory(REPO / "inventories" / "lab.yml")


LAB = context(lab_inventory())
EXAMPLE = context(load_inventory(REPO / "inventories" / "example.yml"))


def plan_of(ctx: ConfigContext) -> DnsPlan:
    plan = dns_plan(ctx.placement)
    assert plan is not None
    return plan


def fixed(serial: int = SERIAL) -> Callable[[object], int]:
    return lambda zone: serial


def config(host: str, ctx: ConfigContext = LAB) -> DnsHostConfig:
    return dns_config(ctx, ctx.inv.host(host), serial=fixed())


# --- placement ------------------------------------------------------------------------------------------------


def test_every_dns_host_is_a_name_server_in_host_name_order() -> None:
    plan = plan_of(LAB)
    assert plan.zone == "chirp.lab"
    assert [(s.label, s.fqdn, s.host, str(s.address), s.provider) for s in plan.servers] == [
        ("ns1", "ns1.chirp.lab", "ams1-data-1", "10.77.3.21", "leaseweb"),
        ("ns2", "ns2.chirp.lab", "fra1-data-1", "10.77.1.21", "hetzner"),
        ("ns3", "ns3.chirp.lab", "rbx1-data-1", "10.77.2.21", "ovh"),
    ]


def test_public_names_are_the_apex_www_and_the_listed_ones() -> None:
    assert [(n.label, n.fqdn) for n in plan_of(LAB).names] == [("@", "chirp.lab"), ("www", "www.chirp.lab")]
    assert [n.fqdn for n in plan_of(EXAMPLE).names] == ["chirp.example", "www.chirp.example", "api.chirp.example"]


def test_each_site_enters_through_its_vip_checked_through_haproxy() -> None:
    plan = plan_of(LAB)
    assert [(str(e.address), e.site, e.provider, e.hosts, e.health_url) for e in plan.entries] == [
        ("10.77.1.100", "fra1", "hetzner", ("fra1-web-1", "fra1-web-2"), "https://10.77.1.100:443/healthz"),
        ("10.77.2.100", "rbx1", "ovh", ("rbx1-web-1", "rbx1-web-2"), "https://10.77.2.100:443/healthz"),
        ("10.77.3.100", "ams1", "leaseweb", ("ams1-web-1", "ams1-web-2"), "https://10.77.3.100:443/healthz"),
    ]
    # One URL for every address: HTTPS (plain HTTP only redirects), the domain as TLS server name and Host
    # header, connected to each entry in turn.
    assert plan.check_url == "https://chirp.lab:443/healthz" and plan.check_port == 443
    assert (plan.ttl, plan.check_interval, plan.check_timeout) == (30, 2, 2)


def test_ports_paths_and_timing_come_from_the_services(make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache, dns]}"
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache, dns]}"
    inv = load_text(make_inventory(hosts=base_hosts, services="services:\n  lb: {http_port: 8080, https_port: 8443}\n"
                                   "  app: {health: /up}\n  dns: {ttl: 300, check_interval: 5, check_timeout: 3, "
                                   "names: [api, www, api]}\n"))
    plan = plan_of(context(inv))
    assert (plan.check_url, plan.check_port) == ("https://chirp.test:8443/up", 8443)
    assert plan.entries[0].health_url == "https://10.1.0.100:8443/up"
    assert (plan.ttl, plan.check_interval, plan.check_timeout) == (300, 5, 3)
    assert [n.label for n in plan.names] == ["@", "www", "api"]  # www once, api once


def test_a_site_without_vip_enters_through_each_of_its_load_balancers() -> None:
    # Validation refuses lb hosts without a VIP today; the placement still answers with their own addresses.
    inv = lab_inventory()
    sites = {**inv.sites, "rbx1": dataclasses.replace(inv.sites["rbx1"], vip=None)}
    plan = plan_of(context(dataclasses.replace(inv, sites=sites)))
    assert [(str(e.address), e.hosts) for e in plan.entries] == [
        ("10.77.1.100", ("fra1-web-1", "fra1-web-2")), ("10.77.2.11", ("rbx1-web-1",)),
        ("10.77.2.12", ("rbx1-web-2",)), ("10.77.3.100", ("ams1-web-1", "ams1-web-2")),
    ]


def test_no_dns_hosts_no_dns_part(make_inventory, load_text) -> None:
    ctx = context(load_text(make_inventory()))
    assert dns_plan(ctx.placement) is None
    assert DNS.describe(ctx.inv, ctx.placement) == ()
    tier = TierContext(ctx.inv, ctx.placement, frozenset(), "losing nothing", "host", {})
    assert judge_dns(tier) is None


# --- the zone -------------------------------------------------------------------------------------------------


def test_the_zone_has_ns_glue_and_one_lua_record_per_public_name() -> None:
    zone = config("fra1-data-1").zone
    assert (zone.origin, zone.ttl, zone.mname, zone.rname, zone.minimum) == (
        "chirp.lab", 30, "ns1.chirp.lab", "hostmaster.chirp.lab", 30)
    assert [(r.owner, r.ttl, r.rtype, r.content) for r in zone.records] == [
        ("@", 3600, "NS", "ns1.chirp.lab."), ("@", 3600, "NS", "ns2.chirp.lab."), ("@", 3600, "NS", "ns3.chirp.lab."),
        ("ns1", 3600, "A", "10.77.3.21"), ("ns2", 3600, "A", "10.77.1.21"), ("ns3", 3600, "A", "10.77.2.21"),
        ("@", None, "LUA", f"A {LAB_LUA}"), ("www", None, "LUA", f"A {LAB_LUA}"),
    ]


def test_every_dns_host_gets_the_same_zone_and_serial() -> None:
    configs = [config(h) for h in DNS_HOSTS]
    assert len({(c.zone, c.serial) for c in configs}) == 1
    assert len({dns.desired(c).files[0].content for c in configs}) == 1


def test_lua_and_zone_strings_are_escaped() -> None:
    assert lua_string("/a'b\\c") == "'/a\\'b\\\\c'"
    assert zone_string('say "hi" \\o/') == '"say \\"hi\\" \\\\o/"'
    code = answer_lua("http://x.test:8080/h'x", 8080, (IPv4Address("192.0.2.1"), IPv4Address("192.0.2.2")), 3)
    options = "{selector='all', backupSelector='all', timeout='3'}"
    assert code == (f";local healthy = ifurlup('http://x.test:8080/h\\'x', {{'192.0.2.1', '192.0.2.2'}}, {options}) "
                    f"local reachable = ifportup(8080, {{'192.0.2.1', '192.0.2.2'}}, {options}) "
                    "if #healthy < 2 then return healthy end return reachable")


def test_a_zone_without_entries_is_refused() -> None:
    plan = dataclasses.replace(plan_of(LAB), entries=())
    with pytest.raises(ValueError, match="no site has an entry address"):
        build_zone(plan)


def test_the_digest_follows_the_content() -> None:
    plan = plan_of(LAB)
    zone = build_zone(plan)
    assert build_zone(plan).digest == zone.digest
    assert build_zone(dataclasses.replace(plan, ttl=60)).digest != zone.digest
    assert build_zone(dataclasses.replace(plan, entries=plan.entries[:2])).digest != zone.digest


# --- the serial -----------------------------------------------------------------------------------------------


def test_the_serial_is_stored_and_kept_while_the_content_is_the_same(tmp_path: Path) -> None:
    path = tmp_path / "chirp.dns-serial"
    first = zone_serial(path, "aaa", clock=lambda: 1_800_000_000.7)
    assert first == 1_800_000_000
    assert zone_serial(path, "aaa", clock=lambda: 1_900_000_000) == first  # deterministic: no clock involved
    assert json.loads(path.read_text()) == {"version": 1, "digest": "aaa", "serial": first}


def test_new_content_gets_a_larger_serial_even_when_the_clock_lags(tmp_path: Path) -> None:
    path = tmp_path / "chirp.dns-serial"
    s1 = zone_serial(path, "aaa", clock=lambda: 1_800_000_000)
    s2 = zone_serial(path, "bbb", clock=lambda: 1_800_000_000)  # two changes in one second
    s3 = zone_serial(path, "aaa", clock=lambda: 1_700_000_000)  # back to the first content, clock stepped back
    s4 = zone_serial(path, "ccc", clock=lambda: 1_800_000_100)
    assert s1 < s2 < s3 < s4 == 1_800_000_100
    assert (s2, s3) == (s1 + 1, s1 + 2)  # a content hash would have repeated s1 for "aaa"


def test_a_lost_serial_file_starts_again_from_the_clock(tmp_path: Path) -> None:
    before = zone_serial(tmp_path / "a.dns-serial", "aaa", clock=lambda: 1_800_000_000)
    assert zone_serial(tmp_path / "elsewhere.dns-serial", "bbb", clock=lambda: 1_800_000_500) > before


def test_a_damaged_serial_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "chirp.dns-serial"
    path.write_text("{not json")
    with pytest.raises(SerialError, match="is not a zone serial file"):
        zone_serial(path, "aaa")
    path.write_text('{"digest": "aaa"}')
    with pytest.raises(SerialError, match="delete it"):
        zone_serial(path, "aaa")


def test_the_serial_stays_within_32_bits() -> None:
    assert next_serial(None, 1_800_000_000.9) == 1_800_000_000
    assert next_serial(1_800_000_000, 0) == 1_800_000_001
    with pytest.raises(SerialError, match="RFC 1982"):
        next_serial(2**32 - 1, 0)


def test_the_serial_file_lives_beside_the_inventory() -> None:
    inv = lab_inventory()
    assert serial_path.__module__ == "deploykit.services.dns.serial"
    assert serial_path(inv) == REPO / "inventories" / "chirp-lab.dns-serial"


def test_the_service_numbers_the_zone_once_per_run_and_again_only_when_it_changes(
        zone_serials_outside_the_checkout: Path, make_inventory, base_hosts, load_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache, dns]}"
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache, dns]}"

    def serials(ttl: int) -> set[int]:
        services = f"services:\n  dns: {{ttl: {ttl}}}\n"
        inv = load_text(make_inventory(hosts=base_hosts, name="chirp-serial", services=services))
        ctx = context(inv)
        return {DNS.config(ctx, h).serial for h in inv.with_role("dns")}

    (first,) = serials(30)
    assert serials(30) == {first}  # a second run, nothing changed: no change to the zone file
    (second,) = serials(60)
    assert second > first
    stored = json.loads((zone_serials_outside_the_checkout / "chirp-serial.dns-serial").read_text())
    assert stored["serial"] == second


# --- desired state --------------------------------------------------------------------------------------------


def test_state() -> None:
    cfg = config("fra1-data-1")
    state = dns.desired(cfg)
    assert state.role == "dns"
    assert state.packages == ("pdns-server", "pdns-backend-bind", "bind9-dnsutils")
    assert state.directories == (Directory("/etc/powerdns/deploykit"),)
    assert [(f.path, f.notify) for f in state.files] == [
        ("/etc/powerdns/deploykit/chirp.lab.zone", ()),  # reloaded in place, never a restart
        ("/etc/powerdns/deploykit/named.conf", ("pdns",)),
        ("/etc/powerdns/pdns.d/zz-deploykit.conf", ("pdns",)),
        ("/usr/local/share/ca-certificates/deploykit-chirp-lab.crt", ()),  # see test_the_dns_hosts_trust_...
    ]
    assert state.files[0].after_change == dns.reload_zone_command("chirp.lab")
    assert all(f.validate and "{path}" in f.validate for f in state.files[:3])
    assert state.services == (Unit("pdns", enabled=True, running=True),)
    assert cfg.listen == ("10.77.1.21:53", "127.0.0.1:53")  # never 0.0.0.0 (a local resolver may hold 127.0.0.53)
    (wait,) = state.waits
    assert wait.timeout_s >= 60
    assert "sleep 5" in wait.command  # interval 2 + timeout 2 + 1: one whole check round after the prime


def test_the_service_contract() -> None:
    assert service_named("dns") is DNS and SERVICES[-1] is DNS  # registered last: after lb and app serve
    assert DNS.rollout is Rollout.ONE_AT_A_TIME
    assert DNS.secrets == ()  # no API, no webserver: nothing to authenticate
    assert DNS.packages == dns.PACKAGES
    assert DNS.tier_column < service_named("lb").tier_column


def test_the_dropin_turns_off_the_api_and_transfers_and_sets_the_checks() -> None:
    text = dns.desired(config("ams1-data-1")).files[2].content
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "launch=bind", "bind-config=/etc/powerdns/deploykit/named.conf", "bind-check-interval=0",
        "local-address=10.77.3.21:53, 127.0.0.1:53", "enable-lua-records=yes", "lua-health-checks-interval=2",
        f"lua-health-checks-expire-delay={CHECKS_EXPIRE_S}", "loglevel=6", "api=no", "webserver=no", "disable-axfr=yes",
        "primary=no", "secondary=no", "version-string=anonymous", "security-poll-suffix=",
    ]
    # after Debian's pdns.d/bind.conf, whose `launch+=bind` our `launch=bind` replaces
    assert Path(DROPIN).name > "bind.conf"


def test_commands() -> None:
    assert dns.reload_zone_command("chirp.lab", "ctl") == (
        "if ctl rping >/dev/null 2>&1; then out=$(ctl bind-reload-now chirp.lab 2>&1); echo \"$out\"; "
        "echo \"$out\" | grep -q -e 'parsed into memory' -e 'no such domain'; fi")
    cfg = config("rbx1-data-1")
    dig = "dig +short +time=1 +tries=1 -p 5300 @127.0.0.9"
    assert dns.warm_up_command(cfg, IPv4Address("127.0.0.9"), 5300) == (
        f"{dig} chirp.lab A >/dev/null; {dig} www.chirp.lab A >/dev/null; sleep 5; "
        f"[ \"$({dig} chirp.lab SOA | awk '{{print $3}}')\" = {SERIAL} ] && "
        f"{dig} chirp.lab A | grep -qE '^[0-9.]+$' && {dig} www.chirp.lab A | grep -qE '^[0-9.]+$'")
    # the validate commands are format strings of the candidate's path only
    for f in dns.desired(cfg).files[:3]:
        assert f.validate is not None
        assert f.validate.format(path="/x").count("/x") == 1


def test_only_dns_hosts_get_a_config() -> None:
    with pytest.raises(ValueError, match="not a dns server"):
        config("fra1-web-1")


# --- firewall -------------------------------------------------------------------------------------------------


def test_dns_is_open_to_anyone_over_udp_and_tcp() -> None:
    assert DNS.firewall(LAB, LAB.inv.host("fra1-data-1")) == (
        FirewallRule("DNS", "udp", 53, None), FirewallRule("DNS over TCP", "tcp", 53, None))
    nft = render("base/nftables.conf.j2", host="x", firewall=base_config(LAB, LAB.inv.host("fra1-data-1")).firewall)
    assert "\t\tudp dport 53 accept\n" in nft and "\t\ttcp dport 53 accept\n" in nft
    web = base_config(LAB, LAB.inv.host("fra1-web-1")).firewall
    assert not any(r.port == 53 for r in web)


def test_udp_rules_from_some_sources_and_unknown_protocols() -> None:
    rule = FirewallRule("x", "udp", 5353, (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")))
    assert "ip saddr { 10.0.0.1, 10.0.0.2 } udp dport 5353 accept" in render("base/nftables.conf.j2", host="x",
                                                                            firewall=(rule,))
    with pytest.raises(ValueError, match="not one of tcp, udp, vrrp"):
        FirewallRule("x", "sctp", 1, None)
    with pytest.raises(ValueError, match="a port is needed"):
        FirewallRule("x", "udp", None, None)


# --- tier -----------------------------------------------------------------------------------------------------


def judge(ctx: ConfigContext, *gone: str, what: str = "losing it") -> tuple[Status, str, str]:
    v = judge_dns(TierContext(ctx.inv, ctx.placement, frozenset(gone), what, "provider", {}))
    assert v is not None
    return v.status, v.reason, v.fix


def hosts_of(ctx: ConfigContext, provider: str) -> list[str]:
    return [h.name for h in ctx.inv.hosts if h.provider == provider]


def test_all_servers_and_sites_unaffected() -> None:
    assert judge(LAB) == (Status.UP, "all 3 dns servers unaffected; chirp.lab answers 10.77.1.100 (fra1), "
                          "10.77.2.100 (rbx1), 10.77.3.100 (ams1)", "")


def test_losing_a_provider_loses_its_server_and_only_its_site() -> None:
    status, reason, _ = judge(LAB, *hosts_of(LAB, "ovh"), what="losing provider ovh")
    assert status is Status.UP
    assert reason == ("ns1, ns2 answer (2 of 3); chirp.lab answers 10.77.1.100 (fra1), 10.77.3.100 (ams1) "
                      "(drops 10.77.2.100 (rbx1))")


def test_losing_a_site_s_load_balancers_keeps_its_dns_server() -> None:
    status, reason, _ = judge(LAB, "fra1-web-1", "fra1-web-2")
    assert status is Status.UP and reason.startswith("all 3 dns servers") is False
    assert reason == ("ns1, ns2, ns3 answer (3 of 3); chirp.lab answers 10.77.2.100 (rbx1), 10.77.3.100 (ams1) "
                      "(drops 10.77.1.100 (fra1))")
    # one of two lbs: the VIP moves, the answer stays
    assert judge(LAB, "fra1-web-1")[1].startswith("all 3 dns servers unaffected")


def test_one_server_left_is_degraded() -> None:
    status, reason, fix = judge(LAB, *hosts_of(LAB, "ovh"), *hosts_of(LAB, "hetzner"), what="losing two")
    assert status is Status.DEGRADED
    assert reason == ("losing two leaves one dns server (ns1): chirp.lab answers 10.77.3.100 (ams1) (drops "
                      "10.77.1.100 (fra1), 10.77.2.100 (rbx1)); it is now the domain's only server")
    assert "more providers" in fix


def test_no_server_left_is_down() -> None:
    status, reason, fix = judge(LAB, *DNS_HOSTS, what="losing the data hosts")
    assert status is Status.DOWN
    assert reason == ("losing the data hosts loses every dns server (ns1, ns2, ns3): chirp.lab stops resolving once "
                      "resolvers' cached answers expire")
    assert "two or more providers" in fix


def test_no_entry_left_is_down() -> None:
    web = [h.name for h in LAB.inv.with_role("lb")]
    status, reason, _ = judge(LAB, *web, what="losing every lb")
    assert status is Status.DOWN
    assert reason.startswith("losing every lb leaves no site entry to answer chirp.lab with")


def test_the_resilience_proof_has_a_dns_column_up_for_every_loss_of_the_lab_and_example() -> None:
    for ctx in (LAB, EXAMPLE):
        report = analyse_resilience(ctx.inv, ctx.placement)
        assert report.tiers[0] == "dns"
        assert report.survives
        assert {s.verdicts[0].status for s in report.scenarios} == {Status.UP}


# --- the offline plan -----------------------------------------------------------------------------------------


def flat(text: str) -> str:
    return " ".join(text.split())


def test_describe_lists_answers_servers_and_the_losses_that_change_them() -> None:
    answers, servers, losses = DNS.describe(LAB.inv, LAB.placement)
    assert answers.columns == ("names", "answer with", "while this answers 200", "TTL")
    assert answers.rows == (
        ("chirp.lab, www.chirp.lab", "10.77.1.100 (fra1, hetzner)", "https://10.77.1.100:443/healthz", "30 s"),
        ("", "10.77.2.100 (rbx1, ovh)", "https://10.77.2.100:443/healthz", ""),
        ("", "10.77.3.100 (ams1, leaseweb)", "https://10.77.3.100:443/healthz", ""),
    )
    assert servers.rows == (("ns1.chirp.lab", "10.77.3.21", "ams1-data-1 (leaseweb)"),
                            ("ns2.chirp.lab", "10.77.1.21", "fra1-data-1 (hetzner)"),
                            ("ns3.chirp.lab", "10.77.2.21", "rbx1-data-1 (ovh)"))
    assert losses.rows[0] == ("provider hetzner", "ns1, ns3", "10.77.2.100 (rbx1), 10.77.3.100 (ams1)")
    assert len(losses.rows) == 6  # every provider and site of the lab changes something


def test_describe_counts_the_losses_that_change_nothing() -> None:
    *_, losses = DNS.describe(EXAMPLE.inv, EXAMPLE.placement)
    assert [r[0] for r in losses.rows if r[0].startswith("rack")] == [
        "rack ams1/r1", "rack ams1/r2", "rack fra1/r1", "rack fra1/r2", "rack rbx1/r1", "rack rbx1/r2"]
    assert ("rack fra1/r1", "ns1, ns2, ns3", "10.20.0.100 (rbx1), 10.30.0.100 (ams1)") in losses.rows


def test_plan_offline_shows_the_dns_tables_and_tier(repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "--offline", str(repo_root / "inventories" / "example.yml")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert ("DNS answers (PowerDNS LUA ifurlup on every dns host, checks every 2 s, timeout 2 s; when all or none "
            "answer 200: those accepting connections on port 443, or all)") in out
    assert "│ chirp.example, www.chirp.example," in out and "api.chirp.example" in out
    assert "│ 10.10.0.100 (fra1, hetzner) │ https://10.10.0.100:443/healthz │ 30 s │" in out
    assert "ns2.chirp.example │ 10.10.0.111 │ fra1-cache-1 (hetzner)" in out
    assert "provider ovh │ ns1, ns2 │ 10.10.0.100 (fra1), 10.30.0.100 (ams1)" in out
    assert "┃ lost ┃ hosts ┃ dns ┃ lb ┃" in out
    assert "roles: etcd 3, db 3, cache 3, lb 6, app 120, worker 120, dns 3" in out


def test_plan_offline_json_holds_the_dns_placement_and_verdicts(repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "--offline", "--json", str(repo_root / "inventories" / "lab.yml")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    part = data["placement"]["dns"]
    assert part["zone"] == "chirp.lab" and part["check_url"] == "https://chirp.lab:443/healthz"
    assert [s["address"] for s in part["servers"]] == ["10.77.3.21", "10.77.1.21", "10.77.2.21"]
    assert [e["address"] for e in part["entries"]] == ["10.77.1.100", "10.77.2.100", "10.77.3.100"]
    ovh = next(s for s in data["resilience"]["scenarios"] if s["unit"] == "ovh")
    assert ovh["tiers"]["dns"]["status"] == "up"
    assert "drops 10.77.2.100 (rbx1)" in ovh["tiers"]["dns"]["reason"]


# --- PowerDNS's own checks of the rendered files ------------------------------------------------------------


@pytest.mark.skipif(shutil.which("pdnsutil") is None or shutil.which("pdns_server") is None,
                    reason="PowerDNS is not installed (apt-get install pdns-server pdns-backend-bind)")
def test_powerdns_accepts_the_files_and_refuses_broken_ones(tmp_path: Path) -> None:
    cfg = config("fra1-data-1")
    zone, named, dropin, _ = dns.desired(dataclasses.replace(cfg, zone_file=str(tmp_path / "chirp.lab.zone"))).files

    def install(path: Path, content: str, validate: str | None) -> subprocess.CompletedProcess[str]:
        Path(str(path) + CANDIDATE_SUFFIX).write_text(content)
        return subprocess.run(["sh", "-c", install_file(str(path), validate)], capture_output=True, text=True)

    for path, f in ((tmp_path / "chirp.lab.zone", zone), (tmp_path / "named.conf", named),
                    (tmp_path / "zz-deploykit.conf", dropin)):
        done = install(path, f.content, f.validate)
        assert done.returncode == 0, done.stdout + done.stderr
        assert path.read_text() == f.content
    assert "Checked 9 records of 'chirp.lab', 0 errors" in install(tmp_path / "chirp.lab.zone", zone.content,
                                                                    zone.validate).stdout
    bad = install(tmp_path / "chirp.lab.zone", zone.content + "broken IN A 1.2.3\n", zone.validate)
    assert bad.returncode != 0 and "failed its check; the live file is unchanged" in bad.stderr
    bad = install(tmp_path / "zz-deploykit.conf", dropin.content + "lua-health-checks-minimum-failures=3\n",
                  dropin.validate)  # no such setting in 4.7
    assert bad.returncode != 0 and "unknown setting" in bad.stderr
    bad = install(tmp_path / "named.conf", named.content.replace("};", "}"), named.validate)
    assert bad.returncode != 0
    assert (tmp_path / "zz-deploykit.conf").read_text() == dropin.content


# --- golden files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", DNS_HOSTS)
def test_golden(host: str, matches_golden) -> None:
    cfg = config(host)
    for file in dns.desired(cfg).files:
        if file.path == cfg.ca_file:  # the CA certificate as it is (here a stand-in secret): nothing rendered
            continue
        golden = GOLDEN / f"{host}__{Path(file.path).name}.txt"
        matches_golden(golden, file.content)
