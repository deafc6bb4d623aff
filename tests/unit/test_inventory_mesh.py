"""Mesh addresses: derived from names (stable when hosts come and go), pins, and the `mesh:` checks."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from deploykit.inventory.mesh import MeshFull, allocate, preferred_slot

F = "inventory.yml"
NET = IPv4Network("10.213.0.0/16")


def test_an_address_depends_only_on_the_name_so_adding_hosts_moves_no_other() -> None:
    names = [f"web-{i}" for i in range(200)]
    before = allocate(names, NET)
    after = allocate([*names, "web-new", "aaa-first-in-sorted-order"], NET)
    assert {n: after[n] for n in names} == before
    assert allocate(list(reversed(names)), NET) == before  # file order plays no part
    assert len(set(after.values())) == len(after)
    assert all(a in NET and a not in (NET.network_address, NET.broadcast_address) for a in after.values())


def colliding_names(network: IPv4Network) -> tuple[str, str]:
    seen: dict[int, str] = {}
    for i in range(10_000):
        name = f"host-{i}"
        slot = preferred_slot(name, network)
        if slot in seen:
            return seen[slot], name
        seen[slot] = name
    raise AssertionError("no collision found")


def test_names_hashing_to_one_slot_get_distinct_addresses_deterministically() -> None:
    small = IPv4Network("10.213.0.0/24")
    a, b = colliding_names(small)
    got = allocate([a, b], small)
    assert got[a] != got[b]
    assert got == allocate([b, a], small)
    first, second = sorted([a, b])
    assert got[first] == small.network_address + preferred_slot(first, small)


def test_a_pin_keeps_its_address_and_others_avoid_it() -> None:
    small = IPv4Network("10.213.0.0/24")
    a, b = colliding_names(small)
    # `b` pinned to the slot `a` hashes to: `a` moves on, the pin stays.
    slot_address = small.network_address + preferred_slot(a, small)
    got = allocate([a, b], small, {b: slot_address})
    assert got[b] == slot_address and got[a] != slot_address


def test_more_hosts_than_addresses_is_refused() -> None:
    with pytest.raises(MeshFull, match="3 hosts do not fit in the mesh network 10.0.0.0/30"):
        allocate(["a", "b", "c"], IPv4Network("10.0.0.0/30"))


def test_the_default_mesh_network_and_each_hosts_address(load_text, make_inventory) -> None:
    inv = load_text(make_inventory())
    assert str(inv.mesh.network) == "10.213.0.0/16" and inv.mesh.port == 51820 and inv.mesh.interface == "mesh0"
    assert all(h.mesh_address in inv.mesh.network for h in inv.hosts)
    assert len({h.mesh_address for h in inv.hosts}) == len(inv.hosts)


def test_a_pinned_range_takes_consecutive_addresses(load_text, make_inventory, base_hosts) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker], " \
                                   "mesh_address: 172.20.0.11}"
    inv = load_text(make_inventory(hosts=base_hosts, extra="mesh: {network: 172.20.0.0/16, port: 51000}"))
    assert inv.host("fra1-web-1").mesh_address == IPv4Address("172.20.0.11")
    assert inv.host("fra1-web-2").mesh_address == IPv4Address("172.20.0.12")
    assert inv.mesh.port == 51000


@pytest.mark.parametrize(("mesh", "message"), [
    ("{network: 10.213.0.0/33}", "'10.213.0.0/33' is not an IPv4 network; write it as address/prefix, "
                                 "e.g. 10.213.0.0/16"),
    ("{network: 10.213.0.1/16}", "'10.213.0.1/16' has host bits set; the network is 10.213.0.0/16"),
    ("{network: 8.8.0.0/16}", "8.8.0.0/16 is not a private network; use one inside 10.0.0.0/8, 172.16.0.0/12, "
                              "192.168.0.0/16 or 100.64.0.0/10 that your providers do not use (default 10.213.0.0/16)"),
    ("{network: 10.1.0.0/16}", "10.1.0.0/16 contains 10.1.0.11, a host address or VIP of this inventory; the mesh "
                               "needs a network of its own (set mesh: {network: ...})"),
    ("{network: 10.213.0.0/28}", "10.213.0.0/28 is too small for a mesh; use a /24 or larger"),
])
def test_a_bad_mesh_network_is_an_error_naming_the_line(mesh: str, message: str, make_inventory, check_text) -> None:
    checked = check_text(make_inventory(extra=f"mesh: {mesh}"))
    assert checked.only_error() == f"{F}:16: mesh/network: {message}"


def test_a_mesh_with_too_little_room_for_its_hosts(make_inventory, check_text) -> None:
    hosts = {"web-[1:200]": "{address: 10.1.0.1, site: fra1, roles: [app]}"}
    checked = check_text(make_inventory(hosts=hosts, sites={"fra1": "{provider: hetzner}"},
                                        failure_domains="[host]", extra="mesh: {network: 10.213.0.0/24}"))
    assert checked.only_error().endswith(
        "mesh/network: 10.213.0.0/24 has 254 addresses for 200 hosts; give it room for twice the hosts at least "
        "(e.g. a /23), so that hashed addresses rarely collide")


@pytest.mark.parametrize(("pin", "message"), [
    ("10.99.0.5", "10.99.0.5 (fra1-data-1) is not a host address of the mesh network 10.213.0.0/16"),
    ("10.213.0.0", "10.213.0.0 (fra1-data-1) is not a host address of the mesh network 10.213.0.0/16"),
    ("10.213.1", "'10.213.1' is not a valid IPv4 address; write four numbers 0-255 like 10.213.0.10"),
])
def test_a_bad_pin_is_an_error(pin: str, message: str, make_inventory, check_text, base_hosts) -> None:
    base_hosts["fra1-data-1"] = f"{{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], mesh_address: {pin}}}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == f"{F}:11: hosts/fra1-data-1/mesh_address: {message}"


def test_one_pin_for_two_hosts_is_an_error(make_inventory, check_text, base_hosts) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache], mesh_address: 10.213.0.9}"
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache], mesh_address: 10.213.0.9}"
    checked = check_text(make_inventory(hosts=base_hosts))
    assert checked.only_error() == (f"{F}:13: hosts/rbx1-data-1/mesh_address: mesh address 10.213.0.9 "
                                    "(rbx1-data-1) is also pinned for 'fra1-data-1'")
