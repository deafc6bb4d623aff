from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from deploykit.errors import LabError
from deploykit.inventory.model import Host, Inventory, MeshNetwork, Services, Site, SshSettings
from deploykit.lab.layout import cpu_weight, plan_layout

SSH = SshSettings(user="root", port=22, identity_file=Path("/x/id"), known_hosts=Path("/x/kh"))


def make_inventory(hosts: dict[str, tuple[str, str]], sites: dict[str, tuple[str, str | None]]) -> Inventory:
    site_objs = {n: Site(n, p, IPv4Address(v) if v else None) for n, (p, v) in sites.items()}
    host_objs = tuple(
        Host(n, IPv4Address(a), s, site_objs[s].provider, None, ("app",), SSH, 1) for n, (a, s) in sorted(hosts.items())
    )
    return Inventory(Path("/inv/lab.yml"), "t-lab", "t.lab", ("site",), SSH, site_objs, host_objs, Services(),
                     mesh=MeshNetwork(IPv4Network("10.77.128.0/17")))


def two_sites() -> Inventory:
    return make_inventory(
        {"a-1": ("10.77.1.11", "a"), "a-2": ("10.77.1.12", "a"), "b-1": ("10.77.2.11", "b")},
        {"a": ("p1", "10.77.1.100"), "b": ("p2", None)},
    )


def test_segments_are_the_sites_24s_with_bridge_and_gateway() -> None:
    layout = plan_layout(two_sites())
    assert [(s.site, str(s.network), s.bridge, str(s.gateway)) for s in layout.segments] == [
        ("a", "10.77.1.0/24", "dklab1", "10.77.1.1"),
        ("b", "10.77.2.0/24", "dklab2", "10.77.2.1"),
    ]
    assert [(s.name, s.segment.bridge, s.veth) for s in layout.servers] == [
        ("a-1", "dklab1", "vb-a-1"), ("a-2", "dklab1", "vb-a-2"), ("b-1", "dklab2", "vb-b-1"),
    ]  # fmt: skip


def test_select_by_host_site_or_provider() -> None:
    layout = plan_layout(two_sites())
    assert [s.name for s in layout.select("a-2")] == ["a-2"]
    assert [s.name for s in layout.select("a")] == ["a-1", "a-2"]
    assert [s.name for s in layout.select("p2")] == ["b-1"]
    with pytest.raises(LabError, match="no server, site or provider"):
        layout.select("zz")


@pytest.mark.parametrize(
    ("hosts", "sites", "message"),
    [
        ({"a-1": ("10.78.1.11", "a")}, {"a": ("p", None)}, "outside the lab range 10.77.0.0/16"),
        ({"a-1": ("10.77.1.11", "a")}, {"a": ("p", "192.168.1.1")}, "VIP 192.168.1.1 is outside"),
        ({"a-1": ("10.77.1.11", "a"), "a-2": ("10.77.2.11", "a")}, {"a": ("p", None)}, "span several /24s"),
        ({"a-1": ("10.77.1.11", "a")}, {"a": ("p", "10.77.5.100")}, "span several /24s"),
        ({"a-1": ("10.77.1.11", "a"), "b-1": ("10.77.1.12", "b")}, {"a": ("p", None), "b": ("p", None)}, "share"),
        ({"a-1": ("10.77.1.1", "a")}, {"a": ("p", None)}, "reserved"),
        ({"abcdefghijklm": ("10.77.1.11", "a")}, {"a": ("p", None)}, "at most 12 characters"),
    ],
)
def test_refuses_what_the_lab_cannot_run(hosts: dict, sites: dict, message: str) -> None:
    with pytest.raises(LabError, match=message):
        plan_layout(make_inventory(hosts, sites))


def test_networks_are_24s() -> None:
    assert plan_layout(two_sites()).segments[0].network == IPv4Network("10.77.1.0/24")


def test_a_mesh_network_outside_the_lab_range_is_refused() -> None:
    inv = two_sites()
    outside = Inventory(inv.path, inv.name, inv.domain, inv.failure_domains, inv.ssh, inv.sites, inv.hosts,
                        inv.services, mesh=MeshNetwork())
    with pytest.raises(LabError, match=r"mesh network 10\.213\.0\.0/16 is outside the lab range"):
        plan_layout(outside)


def test_cpu_weights_favour_the_servers_with_failure_detectors() -> None:
    assert cpu_weight(("app", "worker")) == 1
    assert cpu_weight(("lb",)) == cpu_weight(("dns",)) == 4
    assert cpu_weight(("lb", "etcd")) == cpu_weight(("db",)) == cpu_weight(("cache",)) == 8
    assert cpu_weight(()) == 1
    assert {s.cpu_weight for s in plan_layout(two_sites()).servers} == {1}  # app hosts


def test_the_lab_inventory_s_data_hosts_weigh_most() -> None:
    from deploykit.inventory import load_inventory

    layout = plan_layout(load_inventory(Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"))
    weights = {s.name: s.cpu_weight for s in layout.servers}
    assert {n: w for n, w in weights.items() if "data" in n} and all(w == 8 for n, w in weights.items() if "data" in n)
    assert max(weights.values()) == 8 and min(weights.values()) >= 1
