"""The machine side of the lab's network: a bridge per segment, the 10.77.0.0/16 route, sysctls, nftables.

Only lab objects are touched: bridges named dklab<N>, the lab range's `unreachable` route (more specific
segment routes win while a segment is up), per-bridge forwarding (the machine's global ip_forward and its
uplink stay as they are), and machine-wide sysctls whose earlier values are saved and restored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from deploykit.lab.firewall import PartitionRules, render_removal, render_ruleset
from deploykit.lab.layout import LAB_RANGE, Layout, Segment
from deploykit.lab.proc import ok, run
from deploykit.lab.state import STATE_ROOT

SYSCTL_DIR = Path("/proc/sys")
SAVED_SYSCTLS = STATE_ROOT / "sysctl-saved.json"
# Minimums while a lab exists: every booted systemd uses inotify instances; all namespaces share one ARP table.
SYSCTL_MINIMUMS: dict[str, int] = {
    "fs.inotify.max_user_instances": 8192,
    "fs.inotify.max_user_watches": 1048576,
    "net.ipv4.neigh.default.gc_thresh1": 8192,
    "net.ipv4.neigh.default.gc_thresh2": 32768,
    "net.ipv4.neigh.default.gc_thresh3": 65536,
}


def bridge_argvs(seg: Segment) -> list[list[str]]:
    return [
        ["ip", "link", "add", seg.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"],
        ["ip", "addr", "replace", f"{seg.gateway}/{seg.network.prefixlen}", "dev", seg.bridge],
        ["ip", "link", "set", seg.bridge, "up"],
    ]


def bridge_sysctls(seg: Segment) -> dict[str, str]:
    return {
        f"net.ipv4.conf.{seg.bridge}.forwarding": "1",
        f"net.ipv6.conf.{seg.bridge}.disable_ipv6": "1",
    }


LAB_ROUTE_ARGV = ["ip", "route", "replace", "unreachable", str(LAB_RANGE)]
LAB_ROUTE_DELETE_ARGV = ["ip", "route", "del", "unreachable", str(LAB_RANGE)]


def bridge_exists(name: str) -> bool:
    return (Path("/sys/class/net") / name / "bridge").is_dir()


def ensure_segments(layout: Layout) -> None:
    run(LAB_ROUTE_ARGV)
    for seg in layout.segments:
        argvs = bridge_argvs(seg)
        if bridge_exists(seg.bridge):
            argvs = argvs[1:]
        for argv in argvs:
            run(argv)
        for key, value in bridge_sysctls(seg).items():
            write_sysctl(key, value)


def remove_segments(segments: Sequence[Segment], *, last_lab: bool) -> None:
    for seg in segments:
        if bridge_exists(seg.bridge):
            run(["ip", "link", "del", seg.bridge])
    if last_lab and ok(["ip", "route", "show", "type", "unreachable", str(LAB_RANGE)]):
        run(LAB_ROUTE_DELETE_ARGV, check=False)


def apply_rules(lab: str, partitions: Sequence[PartitionRules]) -> None:
    run(["nft", "-f", "-"], input=render_ruleset(lab, partitions))


def remove_rules(lab: str) -> None:
    run(["nft", "-f", "-"], input=render_removal(lab))


def read_sysctl(key: str) -> str:
    return (SYSCTL_DIR / key.replace(".", "/")).read_text().strip()


def write_sysctl(key: str, value: str) -> None:
    (SYSCTL_DIR / key.replace(".", "/")).write_text(value)


def raise_sysctls() -> None:
    """Raise the machine-wide limits, saving the values found first (once, while any lab exists)."""
    if not SAVED_SYSCTLS.is_file():
        SAVED_SYSCTLS.parent.mkdir(parents=True, exist_ok=True)
        SAVED_SYSCTLS.write_text(json.dumps({k: read_sysctl(k) for k in SYSCTL_MINIMUMS}, indent=2))
    for key, minimum in SYSCTL_MINIMUMS.items():
        if int(read_sysctl(key)) < minimum:
            write_sysctl(key, str(minimum))


def restore_sysctls() -> None:
    if SAVED_SYSCTLS.is_file():
        for key, value in json.loads(SAVED_SYSCTLS.read_text()).items():
            write_sysctl(key, value)
        SAVED_SYSCTLS.unlink()
