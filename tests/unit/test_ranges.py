"""Host-name ranges (`web-[01:40]`): expansion, padding, errors, and the consecutive addresses they take."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from deploykit.inventory.ranges import MAX_RANGE, Expansion, RangeError, check_range_addresses, expand_names


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


RANGE_RULE = "a range stays inside one /24 and uses neither its .0 nor its .255 address"


def test_range_addresses_stay_inside_one_slash_24() -> None:
    check_range_addresses("w-[1:254]", IPv4Address("10.10.0.1"), 254)
    check_range_addresses("w-[1:3]", IPv4Address("10.10.0.252"), 3)
    check_range_addresses("w-[1:1]", IPv4Address("10.10.0.254"), 1)


def test_range_crossing_into_the_next_slash_24() -> None:
    with pytest.raises(RangeError) as exc:
        check_range_addresses("fra1-app-[1:3]", IPv4Address("10.10.0.254"), 3)
    assert str(exc.value) == (
        "range 'fra1-app-[1:3]' takes 10.10.0.254 to 10.10.1.0 (3 addresses), which runs out of 10.10.0.0/24 "
        f"into 10.10.1.0/24; {RANGE_RULE}: start it at 10.10.0.252 or lower, or split it into two entries "
        "(the second starting at 10.10.1.1)"
    )


def test_range_ending_on_the_broadcast_address() -> None:
    with pytest.raises(RangeError) as exc:
        check_range_addresses("w-[1:2]", IPv4Address("10.10.0.254"), 2)
    assert str(exc.value) == (
        "range 'w-[1:2]' takes 10.10.0.254 to 10.10.0.255 (2 addresses), which ends on 10.10.0.255, the "
        f"broadcast address of 10.10.0.0/24; {RANGE_RULE}: start it at 10.10.0.253 or lower, or split it into "
        "two entries (the second starting at 10.10.1.1)"
    )


def test_range_starting_on_the_network_address() -> None:
    with pytest.raises(RangeError) as exc:
        check_range_addresses("w-[1:3]", IPv4Address("10.10.1.0"), 3)
    assert str(exc.value) == (
        "range 'w-[1:3]' takes 10.10.1.0 to 10.10.1.2 (3 addresses), which starts on 10.10.1.0, the network "
        f"address of 10.10.1.0/24; {RANGE_RULE}: start it at 10.10.1.1"
    )


def test_range_larger_than_a_slash_24() -> None:
    with pytest.raises(RangeError) as exc:
        check_range_addresses("w-[1:300]", IPv4Address("10.10.0.1"), 300)
    assert str(exc.value) == (
        "range 'w-[1:300]' takes 10.10.0.1 to 10.10.1.44 (300 addresses), which runs out of 10.10.0.0/24 into "
        f"10.10.1.0/24; {RANGE_RULE}: a /24 holds at most 254 hosts, so split it into entries of at most 254"
    )


def test_one_host_range_on_a_network_address_is_refused() -> None:
    with pytest.raises(RangeError, match="starts on 10.10.1.0, the network address"):
        check_range_addresses("db-[3:3]", IPv4Address("10.10.1.0"), 1)
    with pytest.raises(RangeError, match="ends on 10.10.1.255, the broadcast address"):
        check_range_addresses("db-[3:3]", IPv4Address("10.10.1.255"), 1)


def test_range_may_not_cross_an_octet_in_an_inventory(make_inventory, base_hosts, check_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[1:3]": "{address: 10.10.0.254, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    line = find_line(text, "fra1-app-[1:3]")
    assert check_text(text).only_error() == (
        f"inventory.yml:{line}: hosts/fra1-app-[1:3]/address: range 'fra1-app-[1:3]' takes 10.10.0.254 to "
        "10.10.1.0 (3 addresses), which runs out of 10.10.0.0/24 into 10.10.1.0/24; "
        f"{RANGE_RULE}: start it at 10.10.0.252 or lower, or split it into two entries (the second starting at "
        "10.10.1.1)"
    )


def test_range_ending_on_255_in_an_inventory(make_inventory, base_hosts, check_text, find_line) -> None:
    hosts = {**base_hosts, "fra1-app-[1:5]": "{address: 10.10.0.251, site: fra1, roles: [app]}"}
    text = make_inventory(hosts=hosts)
    assert check_text(text).only_error().startswith(
        f"inventory.yml:{find_line(text, 'fra1-app-[1:5]')}: hosts/fra1-app-[1:5]/address: range 'fra1-app-[1:5]' "
        "takes 10.10.0.251 to 10.10.0.255 (5 addresses), which ends on 10.10.0.255, the broadcast address"
    )


@pytest.mark.parametrize("address", ["10.10.0.0", "10.10.0.255"])
def test_a_single_host_may_have_a_0_or_255_address(make_inventory, base_hosts, check_text, address: str) -> None:
    # in a network larger than a /24 (10.10.0.0/16) these are ordinary addresses; only ranges are held to a /24
    hosts = {**base_hosts, "fra1-app-1": f"{{address: {address}, site: fra1, roles: [app]}}"}
    checked = check_text(make_inventory(hosts=hosts))
    assert checked.rendered == []
    assert checked.inventory is not None and str(checked.inventory.host("fra1-app-1").address) == address


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
