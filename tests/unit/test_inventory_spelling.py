"""Provider, site and rack names compare ignoring case: two spellings of one name are an error naming both.

`Hetzner` and `hetzner` are one provider; counted as two, the resilience proof would claim the stack survives
the loss of a provider when it does not. Nothing is normalised silently: the user picks the spelling.
Base inventory lines (conftest): sites fra1/rbx1/ams1 on 6-8, hosts on 10-15.
"""

from __future__ import annotations

F = "inventory.yml"


def test_provider_spelt_two_ways_on_two_sites(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: Hetzner, vip: 10.2.0.100}"
    checked = check_text(make_inventory(sites=base_sites))
    assert not checked.valid  # the resilience proof must not run on two "providers" that are one
    assert checked.only_error() == (
        f"{F}:7: sites/rbx1/provider: provider 'Hetzner' differs only in case from 'hetzner' "
        "(sites/fra1/provider, line 6); provider names compare ignoring case, so these are one name spelt two "
        "ways: use one spelling, 'hetzner'"
    )


def test_each_site_with_another_spelling_is_reported(make_inventory, base_sites, check_text) -> None:
    base_sites["rbx1"] = "{provider: HETZNER, vip: 10.2.0.100}"
    base_sites["ams1"] = "{provider: Hetzner, vip: 10.3.0.100}"
    checked = check_text(make_inventory(sites=base_sites, failure_domains="[site]"))
    assert [(p.line, p.path) for p in checked.problems if p.severity == "error"] == [
        (7, "sites/rbx1/provider"), (8, "sites/ams1/provider"),
    ]
    assert all("from 'hetzner' (sites/fra1/provider, line 6)" in e for e in checked.errors)


def test_one_spelling_in_any_case_is_fine(make_inventory, base_sites, load_text) -> None:
    base_sites["fra1"] = "{provider: Hetzner, vip: 10.1.0.100}"
    inv = load_text(make_inventory(sites=base_sites))
    assert inv.providers == ("Hetzner", "ovh", "leaseweb")


def test_host_provider_spelt_otherwise_than_its_site(make_inventory, base_hosts, check_text) -> None:
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, provider: OVH, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:13: hosts/rbx1-data-1/provider: provider 'OVH' differs only in case from 'ovh' "
        "(sites/rbx1/provider, line 7); provider names compare ignoring case, so these are one name spelt two "
        "ways: use one spelling, 'ovh'"
    )


def test_two_site_keys_differing_only_in_case(make_inventory, base_sites, check_text) -> None:
    sites = {**base_sites, "FRA1": "{provider: hetzner, vip: 10.4.0.100}"}
    checked = check_text(make_inventory(sites=sites))
    assert checked.errors == [
        f"{F}:9: sites/FRA1: site 'FRA1' differs only in case from 'fra1' (sites/fra1, line 6); site names "
        "compare ignoring case, so these are one name spelt two ways: use one spelling, 'fra1'"
    ]


def test_host_naming_its_site_in_another_case(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: FRA1, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (
        f"{F}:11: hosts/fra1-data-1/site: site 'FRA1' differs only in case from 'fra1' (sites/fra1, line 6); "
        "site names compare ignoring case, so these are one name spelt two ways: use one spelling, 'fra1'"
    )


def test_host_naming_its_site_in_another_case_causes_no_other_problem(make_inventory, base_hosts,
                                                                     check_text) -> None:
    hosts = {k: v.replace("site: fra1", "site: Fra1") for k, v in base_hosts.items()}
    checked = check_text(make_inventory(hosts=hosts))
    assert [p.path for p in checked.problems] == ["hosts/fra1-web-[1:2]/site", "hosts/fra1-data-1/site"]


def test_rack_spelt_two_ways(make_inventory, base_hosts, check_text) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, rack: r1, roles: [lb, app, worker]}"
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, rack: R1, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts, failure_domains="[host]"))
    assert checked.only_error() == (
        f"{F}:11: hosts/fra1-data-1/rack: rack 'R1' differs only in case from 'r1' "
        "(hosts/fra1-web-[1:2]/rack, line 10); rack names compare ignoring case, so these are one name spelt "
        "two ways: use one spelling, 'r1'"
    )


def test_rack_spelling_is_one_across_sites(make_inventory, base_hosts, check_text) -> None:
    # racks of different sites are different racks, but one name spelt two ways is still a slip
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, rack: a1, roles: [db, etcd, cache]}"
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, rack: A1, roles: [db, etcd, cache]}"
    checked = check_text(make_inventory(hosts=base_hosts, failure_domains="[host]"))
    assert checked.only_error().startswith(f"{F}:13: hosts/rbx1-data-1/rack: rack 'A1' differs only in case")
