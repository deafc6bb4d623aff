"""Role etcd: member configuration from the placement; golden files for the lab's members.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import Directory, Unit
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.etcd import SERVICE
from deploykit.services.etcd import state as etcd
from deploykit.services.etcd.config import etcd_config

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "etcd"


def context(name: str) -> ConfigContext:
    inv = load_inventory(REPO / "inventories" / name)
    return ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "s3cr3t-" + s))


LAB = context("lab.yml")
EXAMPLE = context("example.yml")


def mesh(name: str) -> str:
    """A lab host's mesh address (hashed from its name, inside the lab's mesh network 10.77.128.0/17)."""
    return str(LAB.inv.host(name).mesh_address)


def test_member_config_from_placement() -> None:
    cfg = etcd_config(LAB, LAB.inv.host("rbx1-data-1"))
    assert cfg.name == "rbx1-data-1"
    assert cfg.mesh_address == LAB.inv.host("rbx1-data-1").mesh_address
    assert cfg.mesh_address in LAB.inv.mesh.network
    assert cfg.initial_cluster == (
        f"ams1-data-1=http://{mesh('ams1-data-1')}:2380,fra1-data-1=http://{mesh('fra1-data-1')}:2380,"
        f"rbx1-data-1=http://{mesh('rbx1-data-1')}:2380"
    )
    assert cfg.token == "chirp-lab-etcd"
    assert cfg.data_dir == "/var/lib/etcd/chirp-lab-etcd"  # never Debian's /var/lib/etcd/default
    # Clients on the mesh, and etcdctl on the host itself over the loopback.
    assert cfg.listen_client_urls == f"http://{mesh('rbx1-data-1')}:2379,http://127.0.0.1:2379"
    assert cfg.advertise_client_urls == f"http://{mesh('rbx1-data-1')}:2379"
    assert cfg.listen_peer_urls == cfg.advertise_peer_urls == f"http://{mesh('rbx1-data-1')}:2380"
    assert cfg.election_ms >= 10 * cfg.heartbeat_ms
    assert cfg.election_ms < LAB.inv.services.db.retry_timeout * 1000


def test_placement_names_mesh_addresses() -> None:
    plan = LAB.placement["etcd"]
    assert plan.endpoints == tuple(f"{mesh(n)}:2379" for n in ("ams1-data-1", "fra1-data-1", "rbx1-data-1"))
    assert plan.initial_cluster == etcd_config(LAB, LAB.inv.host("fra1-data-1")).initial_cluster
    data = SERVICE.describe_data(plan)
    assert isinstance(data, dict)
    assert data["initial_cluster"] == plan.initial_cluster  # what `plan --offline --json` shows


def test_no_public_address_of_another_host_in_the_config() -> None:
    for host in LAB.inv.with_role("etcd"):
        file = next(f for f in etcd.desired(etcd_config(LAB, host)).files if f.path == "/etc/default/etcd")
        others = [h for h in LAB.inv.hosts if h.name != host.name]
        assert not [h.name for h in others if re.search(rf"\b{re.escape(str(h.address))}\b", file.content)]
        assert not re.search(rf"\b{re.escape(str(host.address))}\b", file.content)  # nor its own


def test_firewall_opens_its_ports_on_the_mesh_only() -> None:
    host = LAB.inv.host("fra1-data-1")
    rules = {r.description: r for r in SERVICE.firewall(LAB, host)}
    data = tuple(LAB.inv.host(n).mesh_address for n in ("ams1-data-1", "fra1-data-1", "rbx1-data-1"))
    assert rules["etcd client"].sources == data  # etcd members and Patroni on the db hosts (the same here)
    assert rules["etcd peer"].sources == data
    assert {(r.port, r.interface) for r in rules.values()} == {(2379, "mesh0"), (2380, "mesh0")}


def test_every_member_gets_the_same_cluster() -> None:
    members = EXAMPLE.inv.with_role("etcd")
    assert [m.name for m in members] == ["ams1-db-1", "fra1-db-1", "rbx1-db-1"]
    assert len({etcd_config(EXAMPLE, h).initial_cluster for h in members}) == 1


def test_only_members_get_a_config() -> None:
    with pytest.raises(ValueError, match="not an etcd member"):
        etcd_config(LAB, LAB.inv.host("fra1-web-1"))


def test_state() -> None:
    state = etcd.desired(etcd_config(LAB, LAB.inv.host("fra1-data-1")))
    assert state.packages == ("etcd-server", "etcd-client")
    assert state.directories == (Directory("/var/lib/etcd/chirp-lab-etcd", "0700", "etcd", "etcd"),)
    # Only the file a restart must apply restarts etcd; the first start's member list restarts nothing.
    assert [(f.path, f.notify, f.after_change) for f in state.files] == [
        ("/etc/default/etcd", ("etcd",), None),
        ("/etc/systemd/system/etcd.service.d/deploykit.conf", (), None),
        ("/etc/deploykit/etcd-bootstrap.env", (), None),
        ("/etc/deploykit/etcd-members", (), None),
    ]
    assert "ETCD_INITIAL_CLUSTER" not in state.files[0].content
    assert state.services == (Unit("etcd", enabled=True, running=True),)
    assert [w.command for w in state.waits] == [
        "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=5s endpoint health"
    ]


@pytest.mark.parametrize("host", [h.name for h in LAB.inv.with_role("etcd")])
def test_golden(host: str, matches_golden) -> None:
    for file in etcd.desired(etcd_config(LAB, LAB.inv.host(host))).files:
        golden = GOLDEN / f"{host}__{Path(file.path).name}.txt"
        matches_golden(golden, file.content)
