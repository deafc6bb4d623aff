"""Exact argv lists and file texts the lab hands to the machine's tools."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from deploykit.lab.keys import keygen_argv, known_hosts_line
from deploykit.lab.layout import Segment, Server
from deploykit.lab.machine import (
    LAB_CPU_SHARE,
    cgroup_dirs,
    cpu_writes,
    network_unit,
    nspawn_argv,
    supervisor_argv,
)
from deploykit.lab.network import LAB_ROUTE_ARGV, bridge_argvs, bridge_sysctls
from deploykit.lab.preflight import apt_install_argv
from deploykit.lab.ssh import ssh_argv

SEG = Segment(site="fra1", provider="hetzner", network=IPv4Network("10.77.1.0/24"))
SERVER = Server(name="fra1-web-1", address=IPv4Address("10.77.1.11"), site="fra1", provider="hetzner", segment=SEG)


def test_bridge_and_route() -> None:
    assert bridge_argvs(SEG) == [
        ["ip", "link", "add", "dklab1", "type", "bridge", "stp_state", "0", "forward_delay", "0"],
        ["ip", "addr", "replace", "10.77.1.1/24", "dev", "dklab1"],
        ["ip", "link", "set", "dklab1", "up"],
    ]
    assert bridge_sysctls(SEG) == {"net.ipv4.conf.dklab1.forwarding": "1", "net.ipv6.conf.dklab1.disable_ipv6": "1"}
    assert LAB_ROUTE_ARGV == ["ip", "route", "replace", "unreachable", "10.77.0.0/16"]


def test_nspawn_and_supervisor() -> None:
    argv = nspawn_argv(SERVER, Path("/srv/root"))
    assert " ".join(argv) == (
        "systemd-nspawn --boot --register=no --keep-unit --machine=fra1-web-1 --directory=/srv/root"
        " --network-bridge=dklab1 --resolv-conf=off --timezone=off --link-journal=no --console=read-only"
        " --bind=/dev/net/tun"
    )
    sup = supervisor_argv([Path("/cg/systemd/x"), Path("/cg/unified/x")], ["systemd-nspawn", "--boot"])
    assert sup == [
        "sh", "-c",
        'while :; do sh -c "$0" dklab-enter "$@"; rc=$?; [ "$rc" -eq 133 ] || exit "$rc"; done',
        'IFS=:; for c in $1; do echo $$ > "$c/cgroup.procs" || exit 1; done; unset IFS; shift; exec "$@"',
        "/cg/systemd/x:/cg/unified/x", "systemd-nspawn", "--boot",
    ]  # fmt: skip


def test_cgroup_dirs_hybrid_and_v2(tmp_path: Path) -> None:
    for h in ("systemd", "unified", "memory", "cpu"):
        (tmp_path / h).mkdir()
    assert cgroup_dirs("chirp-lab", "a-1", tmp_path) == [
        tmp_path / h / "deploykit-lab-chirp-lab" / "a-1" for h in ("systemd", "unified", "memory")
    ]  # a cpu directory without cpu.shares is not the cpu controller
    (tmp_path / "cpu" / "cpu.shares").write_text("1024\n")
    assert cgroup_dirs("chirp-lab", "a-1", tmp_path)[-1] == tmp_path / "cpu" / "deploykit-lab-chirp-lab" / "a-1"
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("memory\n")
    assert cgroup_dirs("l", "a-1", v2) == [v2 / "deploykit-lab-l" / "a-1"]


def test_cpu_writes_v1_shares_v2_weights_or_nothing(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.shares").write_text("1024\n")
    top = v1 / "cpu" / "deploykit-lab-l"
    assert cpu_writes("l", "a-1", 8, v1) == [(top / "cpu.shares", str(1024 * LAB_CPU_SHARE)),
                                             (top / "a-1" / "cpu.shares", "8192")]
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert cpu_writes("l", "a-1", 4, v2) == [
        (v2 / "cgroup.subtree_control", "+cpu"), (v2 / "deploykit-lab-l" / "cgroup.subtree_control", "+cpu"),
        (v2 / "deploykit-lab-l" / "cpu.weight", str(100 * LAB_CPU_SHARE)),
        (v2 / "deploykit-lab-l" / "a-1" / "cpu.weight", "400"),
    ]  # fmt: skip
    (v2 / "cgroup.controllers").write_text("memory pids\n")
    assert cpu_writes("l", "a-1", 4, v2) == []
    assert cpu_writes("l", "a-1", 4, tmp_path / "none") == []


def test_network_unit_routes_only_the_lab_range() -> None:
    assert network_unit(SERVER) == (
        "[Match]\nName=host0\n\n"
        "[Network]\nAddress=10.77.1.11/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[Route]\nDestination=10.77.0.0/16\nGateway=10.77.1.1\n"
    )


def test_ssh_is_strict() -> None:
    assert ssh_argv("10.77.1.11", port=22, identity_file=Path("/k"), known_hosts=Path("/kh"), command=["true"]) == [
        "ssh", "-i", "/k", "-p", "22", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/kh", "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
        "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "root@10.77.1.11", "true",
    ]  # fmt: skip


def test_keys() -> None:
    assert keygen_argv(Path("/k"), "c") == ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", "/k"]
    key = "ssh-ed25519 AAAAC3 root@fra1-web-1"
    assert known_hosts_line("10.77.1.11", "fra1-web-1", 22, key) == "10.77.1.11,fra1-web-1 ssh-ed25519 AAAAC3"
    assert known_hosts_line("10.77.1.11", "h", 2222, key) == "[10.77.1.11]:2222,[h]:2222 ssh-ed25519 AAAAC3"


def test_apt_install() -> None:
    assert apt_install_argv(["nftables"]) == ["apt-get", "install", "-y", "-q", "--no-install-recommends", "nftables"]
