"""Host-name ranges (`web-[01:40]`): expansion, padding, errors, and the consecutive addresses they take."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from deploykit.inventory.ranges import MAX_RANGE, Expansion, RangeError, expand_names


def test_plain_name_is_not_a_range() -> None:
    assert expand_names("fra1-db-1") == Expansion(("fra1-db-1",), False)


def test_zero_padding_of_the_start_bound_is_kept() -> None:
    exp = expand_names("web-[01:40]")
    assert exp.is_range
    assert len(exp.names) == 40
    assert exp.names[:3] == ("web-01", "web-02", "web-03")
    assert exp.names[8:10] == ("web-09", "web-10")
    assert exp.names[-1] == "web-40"


def test_unpadded_range_crosses_a_digit_boundary_without_padding() -> None:
    assert expand_names("web-[8:11]").names == ("web-8", "web-9", "web-10", "web-11")


def test_padding_width_comes_from_the_start_bound() -> None:
    assert expand_names("n[001:003]").names == ("n001", "n002", "n003")
    assert expand_names("n[09:10]").names == ("n09", "n10")


def test_single_zero_start_is_not_padding() -> None:
    assert expand_names("w-[0:2]").names == ("w-0", "w-1", "w-2")


def test_prefix_and_suffix_are_kept() -> None:
    assert expand_names("fra1-[1:2]-app").names == ("fra1-1-app", "fra1-2-app")


def test_one_element_range_is_still_a_range() -> None:
    assert expand_names("db-[3:3]") == Expansion(("db-3",), True)


def test_reversed_range_names_the_fix() -> None:
    with pytest.raises(RangeError, match=r"^range \[5:1\] is reversed; write \[1:5\]$"):
        expand_names("web-[5:1]")


def test_range_limit() -> None:
    assert len(expand_names(f"h-[1:{MAX_RANGE}]").names) == MAX_RANGE
    with pytest.raises(RangeError, match=rf"range \[0:{MAX_RANGE}\] has {MAX_RANGE + 1} hosts; at most {MAX_RANGE}"):
        expand_names(f"h-[0:{MAX_RANGE}]")


@pytest.mark.parametrize("pattern", ["web-[1:2]-[3:4]", "web-[a:b]", "web-[1-3]", "web-[1:]", "web-]1:2[", "web-[1:2"])
def test_malformed_ranges(pattern: str) -> None:
    with pytest.raises(RangeError) as exc:
        expand_names(pattern)
    assert str(exc.value) == (
        f"'{pattern}' is not a valid host range; write one range of numbers like 'web-[01:40]'"
    )


def test_invalid_host_name_suggests_a_fix() -> None:
    with pytest.raises(RangeError) as exc:
        expand_names("Fra1_App")
    assert str(exc.value) == (
        "'Fra1_App' is not a valid host name: use lower-case letters, digits and '-', at most 63 characters, "
        "not starting or ending with '-' (e.g. 'fra1-app')"
    )


@pytest.mark.parametrize("name", ["-web", "web-", "a" * 64, "web host"])
def test_invalid_host_names(name: str) -> None:
    with pytest.raises(RangeError, match="is not a valid host name"):
        expand_names(name)


def test_range_that_expands_to_an_invalid_name_is_rejected() -> None:
    with pytest.raises(RangeError, match="'-1' is not a valid host name"):
        expand_names("-[1:2]")


def test_63_characters_is_the_longest_name() -> None:
    assert expand_names("a" * 63).names == ("a" * 63,)


# --- ranges inside an inventory: consecutive addresses ---------------------------------------------------


def test_range_hosts_get_consecutive_addresses(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fra1-app-[01:40]": "{address: 10.10.0.21, site: fra1, roles: [app]}"}
    inv = load_text(make_inventory(hosts=hosts))
    apps = [h for h in inv.hosts if h.name.startswith("fra1-app-")]
    assert [h.name for h in apps] == [f"fra1-app-{i:02d}" for i in range(1, 41)]
    assert [h.address for h in apps] == [IPv4Address("10.10.0.21") + i for i in range(40)]
    assert inv.host("fra1-app-01").address == IPv4Address("10.10.0.21")
    assert inv.host("fra1-app-40").address == IPv4Address("10.10.0.60")


def test_unpadded_range_in_inventory(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fra1-app-[8:11]": "{address: 10.10.0.8, site: fra1, roles: [app]}"}
    inv = load_text(make_inventory(hosts=hosts))
    assert {h.name: str(h.address) for h in inv.hosts if h.name.startswith("fra1-app-")} == {
        "fra1-app-8": "10.10.0.8", "fra1-app-9": "10.10.0.9", "fra1-app-10": "10.10.0.10",
        "fra1-app-11": "10.10.0.11",
    }


def test_range_hosts_share_the_entry_line(make_inventory, base_hosts, load_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[1:3]": "{address: 10.10.0.21, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    inv = load_text(text)
    line = find_line(text, "fra1-app-[1:3]")
    assert {h.line for h in inv.hosts if h.name.startswith("fra1-app-")} == {line}


def test_range_addresses_may_cross_an_octet(make_inventory, base_hosts, load_text) -> None:
    hosts = {**base_hosts, "fra1-app-[1:3]": "{address: 10.10.0.255, site: fra1, roles: [app]}"}
    inv = load_text(make_inventory(hosts=hosts))
    assert [str(inv.host(f"fra1-app-{i}").address) for i in (1, 2, 3)] == ["10.10.0.255", "10.10.1.0", "10.10.1.1"]


def test_range_running_past_the_last_address(make_inventory, base_hosts, check_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[1:3]": "{address: 255.255.255.254, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    line = find_line(text, "fra1-app-[1:3]")
    assert check_text(text).only_error() == (
        f"inventory.yml:{line}: hosts/fra1-app-[1:3]/address: 3 consecutive addresses from 255.255.255.254 "
        "run past 255.255.255.255"
    )


def test_reversed_range_in_inventory(make_inventory, base_hosts, check_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[40:01]": "{address: 10.10.0.21, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    line = find_line(text, "fra1-app-[40:01]")
    assert check_text(text).only_error() == (
        f"inventory.yml:{line}: hosts/fra1-app-[40:01]: range [40:01] is reversed; write [01:40]"
    )


def test_reversed_range_with_bad_address_reports_both(make_inventory, base_hosts, check_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[3:1]": "{address: 10.10.0.300, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    line = find_line(text, "fra1-app-[3:1]")
    assert check_text(text).errors == [
        f"inventory.yml:{line}: hosts/fra1-app-[3:1]: range [3:1] is reversed; write [1:3]",
        f"inventory.yml:{line}: hosts/fra1-app-[3:1]/address: '10.10.0.300' is not a valid IPv4 address; "
        "write four numbers 0-255 like 10.10.0.21",
    ]
