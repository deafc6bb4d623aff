"""Validation of the dns role and of the domain it serves: every problem with file, line, key path and fix.

The base inventory (conftest) puts `domain:` on line 3, the sites on lines 6-8 and the host entries on lines
10-15 (fra1-web, fra1-data, rbx1-web, rbx1-data, ams1-web, ams1-data).
"""

from __future__ import annotations

import pytest

F = "inventory.yml"
DATA = "{address: 10.%d.0.21, site: %s, roles: [db, etcd, cache, dns]}"


def with_dns(base_hosts: dict[str, str], *sites: str) -> dict[str, str]:
    octet = {"fra1": 1, "rbx1": 2, "ams1": 3}
    for site in sites:
        base_hosts[f"{site}-data-1"] = DATA % (octet[site], site)
    return base_hosts


# --- the dns role ---------------------------------------------------------------------------------------------


def test_dns_at_every_provider_is_valid(make_inventory, base_hosts, check_text) -> None:
    checked = check_text(make_inventory(hosts=with_dns(base_hosts, "fra1", "rbx1", "ams1"),
                                        failure_domains="[provider, site, rack, host]"))
    assert checked.errors == []
    assert checked.inventory is not None
    assert [h.name for h in checked.inventory.with_role("dns")] == ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert checked.inventory.host("fra1-data-1").roles[0] == "dns"  # the edge first


def test_dns_at_two_providers_is_enough(make_inventory, base_hosts, check_text) -> None:
    assert check_text(make_inventory(hosts=with_dns(base_hosts, "fra1", "ams1"))).errors == []


def test_one_dns_host_is_an_error_with_its_line_and_the_fix(make_inventory, base_hosts, check_text) -> None:
    checked = check_text(make_inventory(hosts=with_dns(base_hosts, "rbx1")))
    assert checked.only_error() == (
        f"{F}:13: hosts/rbx1-data-1/roles: the dns role is on one host only (rbx1-data-1, at ovh): losing ovh would "
        "take chirp.test off the air; give the dns role to hosts at two or more providers (e.g. one host per "
        "provider)"
    )


def test_dns_hosts_of_one_provider_are_an_error(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-data-1"] = DATA % (1, "fra1")
    base_hosts["fra1-dns-[1:2]"] = "{address: 10.1.0.31, site: fra1, roles: [dns]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:16: hosts/fra1-dns-[1:2]/roles: every dns host is at provider 'hetzner' (fra1-data-1, fra1-dns-1, "
        "fra1-dns-2): losing hetzner would take chirp.test off the air; give the dns role to hosts at two or more "
        "providers (e.g. one host per provider)"
    )


def test_dns_in_two_sites_of_one_provider_is_still_one_provider(make_inventory, base_hosts, base_sites,
                                                                check_text) -> None:
    base_sites["fra2"] = "{provider: hetzner}"
    base_hosts["fra1-data-1"] = DATA % (1, "fra1")
    base_hosts["fra2-dns-1"] = "{address: 10.4.0.31, site: fra2, roles: [dns]}"
    checked = check_text(make_inventory(hosts=base_hosts, sites=base_sites))
    assert "every dns host is at provider 'hetzner' (fra1-data-1, fra2-dns-1)" in checked.only_error()


def test_provider_spelling_does_not_make_a_second_provider(make_inventory, base_hosts, base_sites,
                                                           check_text) -> None:
    base_sites["fra2"] = "{provider: Hetzner}"
    base_hosts["fra1-data-1"] = DATA % (1, "fra1")
    base_hosts["fra2-dns-1"] = "{address: 10.4.0.31, site: fra2, roles: [dns]}"
    errors = check_text(make_inventory(hosts=base_hosts, sites=base_sites)).errors
    assert any("every dns host is at provider" in e for e in errors)  # besides the spelling error itself


def test_dns_without_any_load_balancer_has_nothing_to_answer(make_inventory, check_text) -> None:
    hosts = {"fra1-dns-1": "{address: 10.1.0.31, site: fra1, roles: [dns]}",
             "rbx1-dns-1": "{address: 10.2.0.31, site: rbx1, roles: [dns]}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert f"{F}:11: hosts/rbx1-dns-1/roles: the dns role answers chirp.test with the sites' entry addresses " \
           "(each site's VIP), but no site has lb hosts; add lb hosts (and a vip) to the sites" in checked.errors


def test_a_single_label_domain_cannot_be_delegated(make_inventory, base_hosts, check_text) -> None:
    text = make_inventory(hosts=with_dns(base_hosts, "fra1", "rbx1")).replace("domain: chirp.test", "domain: chirp")
    assert check_text(text).only_error() == (
        f"{F}:3: domain: the dns role serves 'chirp' itself, but a registrar delegates only a name of two labels or "
        "more; use e.g. 'chirp.example'"
    )
    assert check_text(make_inventory().replace("domain: chirp.test", "domain: chirp")).errors == []  # no dns


def test_port_53_is_taken_on_a_dns_host(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker, dns]}"
    base_hosts["rbx1-data-1"] = DATA % (2, "rbx1")
    text = make_inventory(hosts=base_hosts, services="services:\n  lb: {stats_port: 53}\n")
    assert check_text(text).only_error() == (
        f"{F}:17: services/lb/stats_port: port 53 of lb.stats_port is also DNS (always port 53) on host "
        "'fra1-web-1' (roles dns, lb, app, worker); pick another port"
    )


# --- services.dns ---------------------------------------------------------------------------------------------


def test_dns_settings(make_inventory, base_hosts, load_text) -> None:
    inv = load_text(make_inventory(hosts=with_dns(base_hosts, "fra1", "rbx1"), services=(
        "services:\n  dns: {ttl: 120, names: [api, m], check_interval: 3, check_timeout: 1}\n")))
    svc = inv.services.dns
    assert (svc.ttl, svc.names, svc.check_interval, svc.check_timeout) == (120, ("api", "m"), 3, 1)
    default = load_text(make_inventory()).services.dns
    assert (default.ttl, default.names, default.check_interval, default.check_timeout) == (30, (), 2, 2)


@pytest.mark.parametrize(("setting", "message"), [
    ("ttl: 0", "services/dns/ttl: input should be greater than or equal to 1, got the number 0"),
    ("ttl: '30'", "services/dns/ttl: expected a whole number, got the text '30'"),
    ("check_interval: 0", "services/dns/check_interval: input should be greater than or equal to 1, got the number 0"),
    ("check_timeout: 31", "services/dns/check_timeout: input should be less than or equal to 30, got the number 31"),
    ("tll: 30", "services/dns/tll: unknown key 'tll' (did you mean 'ttl'?)"),
    ("names: api", "services/dns/names: expected a list, got the text 'api'"),
])
def test_dns_settings_are_checked(make_inventory, check_text, setting: str, message: str) -> None:
    text = make_inventory(services=f"services:\n  dns: {{{setting}}}\n")
    assert check_text(text).only_error() == f"{F}:17: {message}"


@pytest.mark.parametrize(("name", "message"), [
    ("API", "'API' is not a DNS label: lower-case letters, digits and '-', at most 63, one label under the domain "
            "(e.g. 'api')"),
    ("api.v2", "'api.v2' is not a DNS label: lower-case letters, digits and '-', at most 63, one label under the "
               "domain (e.g. 'api-v2')"),
    ("-", "'-' is not a DNS label: lower-case letters, digits and '-', at most 63, one label under the domain"),
    ("ns2", "'ns2' names a dns server (ns1, ns2 ... are the NS records); pick another name"),
])
def test_extra_names_must_be_labels_that_name_no_server(make_inventory, check_text, name: str, message: str) -> None:
    text = make_inventory(services=f"services:\n  dns: {{names: [ok, '{name}']}}\n")
    assert check_text(text).only_error() == f"{F}:17: services/dns/names/1: {message}"


def test_www_and_repeated_names_are_warnings(make_inventory, check_text) -> None:
    checked = check_text(make_inventory(services="services:\n  dns: {names: [www, api, api]}\n"))
    assert checked.errors == []
    assert checked.warnings == [
        f"{F}:17: services/dns/names/0: warning: 'www' is always answered (with the apex); drop it here",
        f"{F}:17: services/dns/names/2: warning: 'api' is listed twice",
    ]


def test_a_name_too_long_for_the_domain(make_inventory, check_text) -> None:
    domain = ".".join(["d" * 60] * 3) + ".example"  # 191 characters: valid alone
    label = "n" * 63
    text = make_inventory(services=f"services:\n  dns: {{names: [{label}]}}\n").replace(
        "domain: chirp.test", f"domain: {domain}")
    assert check_text(text).only_error() == (
        f"{F}:17: services/dns/names/0: '{label}.{domain}' is longer than 253 characters")


# --- the domain -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("domain", "why"), [
    ("chirp.example.", "write it without the final '.'; e.g. 'chirp.example'"),
    ("Chirp.Example", "use lower-case letters; e.g. 'chirp.example'"),
    ("chirp_app.example", "'_' not allowed (letters, digits, '-' and '.' only); e.g. 'chirp-app.example'"),
    ("chirp..example", "it has an empty label (two dots in a row, or a dot at the start); e.g. 'chirp.example'"),
    ("-chirp.example", "the label '-chirp' starts or ends with '-'; e.g. 'chirp.example'"),
    ("10.77.1.100", "its last label is a number (an IP address is not a domain)"),
    ("a" * 64 + ".example", f"the label '{'a' * 16}...' has 64 characters, at most 63 are allowed; e.g. "
                            f"'{'a' * 63}.example'"),
    ("chirp example", "' ' not allowed (letters, digits, '-' and '.' only); e.g. 'chirp-example'"),
])
def test_a_domain_that_is_not_a_dns_name(make_inventory, check_text, domain: str, why: str) -> None:
    text = make_inventory().replace("domain: chirp.test", f"domain: '{domain}'")
    assert check_text(text).only_error() == (
        f"{F}:3: domain: '{domain}' is not a valid DNS name (lower-case, like chirp.example): {why}")


def test_a_domain_longer_than_253_characters(make_inventory, check_text) -> None:
    domain = ".".join(["d" * 63] * 4) + ".example"  # 263
    text = make_inventory().replace("domain: chirp.test", f"domain: {domain}")
    assert check_text(text).only_error() == (
        f"{F}:3: domain: string should have at most 253 characters, got a long text")


def test_long_domains_and_numeric_labels_inside_are_fine(make_inventory, load_text) -> None:
    domain = "chirp-social-network-production-deployment.eu-west-3.example.com"  # 64 characters
    inv = load_text(make_inventory().replace("domain: chirp.test", f"domain: {domain}"))
    assert inv.domain == domain
    assert load_text(make_inventory().replace("domain: chirp.test", "domain: 1and1.example")).domain == "1and1.example"


def test_the_shipped_inventories_serve_dns_from_every_provider(repo_root) -> None:
    from deploykit.inventory import load_inventory

    for name, hosts in (("lab.yml", ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]),
                        ("example.yml", ["ams1-cache-1", "fra1-cache-1", "rbx1-cache-1"])):
        inv = load_inventory(repo_root / "inventories" / name)
        assert [h.name for h in inv.with_role("dns")] == hosts
        assert len({h.provider for h in inv.with_role("dns")}) == 3
        # the lab keeps every address inside its 10.77.0.0/16
        if name == "lab.yml":
            assert all(str(h.address).startswith("10.77.") for h in inv.hosts)
