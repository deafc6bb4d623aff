from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from deploykit.lab.layout import Layout, Segment, Server
from deploykit.lab.state import LabState, Partition


def test_state_round_trips_through_json() -> None:
    seg = Segment(site="a", provider="p", network=IPv4Network("10.77.1.0/24"))
    server = Server("a-1", IPv4Address("10.77.1.11"), "a", "p", seg, cpu_weight=8)
    layout = Layout(lab="l", segments=(seg,), servers=(server,))
    state = LabState(
        layout=layout, inventory=Path("/i.yml"), identity_file=Path("/k"), known_hosts=Path("/kh"), ssh_port=22,
        domain="l.lab", base=Path("/base"), partitions=[Partition("a", ("a-1",), keep_controller=False)],
    )  # fmt: skip
    again = LabState.from_json(state.to_json())
    assert again == state
    assert again.server_dir("a-1") == Path("/var/lib/deploykit/lab/l/servers/a-1")


def test_a_state_written_before_cpu_weights_reads_as_equal_weights() -> None:
    seg = Segment(site="a", provider="p", network=IPv4Network("10.77.1.0/24"))
    layout = Layout(lab="l", segments=(seg,), servers=(Server("a-1", IPv4Address("10.77.1.11"), "a", "p", seg, 8),))
    state = LabState(layout=layout, inventory=Path("/i.yml"), identity_file=Path("/k"), known_hosts=Path("/kh"),
                     ssh_port=22, domain="l.lab", base=Path("/base"))
    data = state.to_json()
    for server in data["servers"]:
        del server["cpu_weight"]
    assert [s.cpu_weight for s in LabState.from_json(data).layout.servers] == [1]
