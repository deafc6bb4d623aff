"""`deploykit lab`: real servers that answer SSH strictly, die abruptly, come back, and can be cut off."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.ssh import port_open

pytestmark = pytest.mark.e2e


def reaches(lab: Lab, src: str, address: str) -> bool:
    return lab.ssh(src, f"ping -c1 -W1 {address} >/dev/null").returncode == 0


def address(lab: Lab, host: str) -> str:
    return str(lab.layout.server(host).address)


def test_every_server_answers_ssh_with_strict_host_key_checking(lab: Lab) -> None:
    for server in lab.layout.servers:
        done = lab.ssh(server.name, "hostname; systemctl is-system-running --wait")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [server.name, "running"]
    known = lab.state.known_hosts.read_text()
    assert f"{address(lab, 'fra1-web-1')},fra1-web-1 ssh-ed25519 " in known
    # the same connection with a known_hosts that lacks the server is refused
    argv = lab.ssh_argv("fra1-web-1", ["true"])
    argv[argv.index(f"UserKnownHostsFile={lab.state.known_hosts}")] = "UserKnownHostsFile=/dev/null"
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 255 and "verification failed" in refused.stderr


def test_servers_reach_each_other_across_sites_and_nothing_outside(lab: Lab) -> None:
    assert reaches(lab, "fra1-web-1", address(lab, "fra1-data-1"))
    assert reaches(lab, "fra1-web-1", address(lab, "rbx1-web-1"))
    assert reaches(lab, "ams1-data-1", address(lab, "fra1-web-2"))
    outside = lab.ssh("fra1-web-1", "ip route get 1.1.1.1")
    assert outside.returncode != 0 and "unreachable" in outside.stderr
    # even with a default route via the machine, nothing is forwarded out of the lab
    done = lab.ssh(
        "fra1-web-1",
        "ip route add default via 10.77.1.1 && ping -c1 -W1 1.1.1.1; rc=$?; ip route del default; exit $rc",
    )
    assert done.returncode != 0


def test_servers_can_take_a_vip_and_have_the_service_packages(lab: Lab) -> None:
    vip = "10.77.1.100"
    done = lab.ssh(
        "fra1-web-1", f"ip addr add {vip}/24 dev host0 && ip -br addr show host0 && ip addr del {vip}/24 dev host0"
    )
    assert done.returncode == 0 and vip in done.stdout, done.stderr
    tools = "haproxy -v; keepalived -v; patroni --version; etcd --version; redis-server --version; gunicorn --version"
    done = lab.ssh("fra1-data-1", tools + "; python3 -c 'import flask, psycopg, psycopg2, redis'")
    assert done.returncode == 0, done.stderr
    enabled = lab.ssh("fra1-data-1", "systemctl is-enabled haproxy keepalived patroni etcd redis-server")
    assert set(enabled.stdout.split()) == {"disabled"}
    assert lab.ssh("fra1-data-1", "cat /etc/hosts").stdout.count("10.77.") == len(lab.layout.servers)


def test_kill_is_abrupt_and_start_keeps_identity_and_data(lab: Lab) -> None:
    host = "rbx1-web-2"
    before = lab.ssh(host, "echo $RANDOM > /root/marker && sync && cat /root/marker /etc/machine-id")
    assert before.returncode == 0
    started = time.monotonic()
    assert lab.kill([host]) == [host]
    while port_open(address(lab, host), 22) and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert time.monotonic() - started < 1.0, "still answering a second after the kill"
    assert [s.state for s in lab.status() if s.name == host] == ["stopped"]
    assert lab.kill([host]) == []
    lab.start([host])
    after = lab.ssh(host, "cat /root/marker /etc/machine-id")  # strict host-key check: same identity
    assert after.returncode == 0 and after.stdout == before.stdout


def test_a_server_rebooting_itself_comes_back(lab: Lab) -> None:
    """`reboot` inside makes systemd-nspawn exit 133; the lab boots the server again, as a real one would."""
    host = "ams1-web-2"
    machine = lab.machine(lab.layout.server(host))
    before = machine.init_pid()
    lab.ssh(host, "systemctl reboot", timeout=10)
    deadline = time.monotonic() + 30
    while machine.init_pid() in (before, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert machine.init_pid() not in (before, None)
    lab.wait_for_ssh([host], timeout=60)
    assert lab.ssh(host, "systemctl is-system-running --wait").stdout.strip() == "running"


def test_partition_and_heal(lab: Lab) -> None:
    web1, web2, rbx = address(lab, "fra1-web-1"), address(lab, "fra1-web-2"), address(lab, "rbx1-web-1")
    try:
        lab.partition("fra1-web-1")  # one host, controller keeps access
        assert not reaches(lab, "fra1-web-1", web2)
        assert not reaches(lab, "fra1-web-1", rbx)
        assert not reaches(lab, "rbx1-web-1", web1)
        assert reaches(lab, "fra1-web-2", rbx)
        lab.heal()
        assert reaches(lab, "fra1-web-1", web2) and reaches(lab, "fra1-web-1", rbx)

        lab.partition("hetzner", keep_controller=False)  # a provider (site fra1), controller cut off too
        assert lab.ssh("fra1-web-1", "true", timeout=4).returncode != 0
        assert not reaches(lab, "rbx1-web-1", web1)
        assert reaches(lab, "rbx1-web-1", address(lab, "ams1-web-1"))
        lab.heal(["hetzner"])
        lab.partition("fra1")  # a site: it still talks within itself
        assert reaches(lab, "fra1-web-1", web2)
        assert not reaches(lab, "fra1-web-2", rbx)
        assert [s.partitioned for s in lab.status() if s.site == "fra1"] == [True, True, True]
    finally:
        lab.heal()
    assert reaches(lab, "fra1-web-1", rbx) and reaches(lab, "rbx1-web-1", web1)


def test_up_again_starts_only_what_is_missing(lab: Lab) -> None:
    pids = {m.server.name: m.init_pid() for m in lab.machines()}
    lab.kill(["ams1-web-1"])
    lab.up()
    now = {m.server.name: m.init_pid() for m in lab.machines()}
    assert all(now[n] == pids[n] for n in pids if n != "ams1-web-1")
    assert now["ams1-web-1"] not in (None, pids["ams1-web-1"])


LAB2 = """\
version: 1
name: dk-e2e-down
domain: down.lab
failure_domains: [site]
ssh: {user: root, port: 22, identity_file: .lab/id_ed25519, known_hosts: .lab/known_hosts}
mesh: {network: 10.77.202.0/24}
sites:
  s200: {provider: p1}
  s201: {provider: p2}
hosts:
  s200-a-1: {address: 10.77.200.11, site: s200, roles: [app]}
  s201-a-1: {address: 10.77.201.11, site: s201, roles: [app]}
"""


def test_down_leaves_nothing_behind(lab: Lab, tmp_path: Path) -> None:
    """A second, small lab beside the session's: up, break, half-remove, down; nothing of it stays."""
    (tmp_path / "lab.yml").write_text(LAB2)
    second = Lab.for_inventory(load_inventory(tmp_path / "lab.yml"))
    try:
        second.up()
        second.partition("s200-a-1")
        second.kill(["s201-a-1"])
        assert second.ssh("s200-a-1", "true").returncode == 0
        Lab.for_inventory(load_inventory(tmp_path / "lab.yml")).up()  # again, over a lab that exists
    finally:
        second.down()
    assert second.remains() == []
    assert lab.ssh("fra1-web-1", "true").returncode == 0  # the other lab is untouched
