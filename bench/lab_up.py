"""Benchmark `deploykit lab up`: N servers (default 50) from a generated inventory, timed; then removed.

    sudo .venv/bin/python bench/lab_up.py [--servers 50] [--per-site 10]

Prints the time to build the base image (0 when cached), to bring every server up to SSH, the memory per
idle server (the machine's MemAvailable drop, and the servers' own cgroups), a kill -> start round trip,
and the time `lab down` takes. The lab is removed at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from deploykit.inventory import load_inventory
from deploykit.lab import image
from deploykit.lab.lab import Lab


def inventory_text(servers: int, per_site: int) -> str:
    sites = (servers + per_site - 1) // per_site
    lines = [
        "version: 1",
        "name: bench-lab",
        "domain: bench.lab",
        "failure_domains: [site]",
        "ssh: {user: root, port: 22, identity_file: .lab/id_ed25519, known_hosts: .lab/known_hosts}",
        "mesh: {network: 10.77.128.0/17}",
        "sites:",
    ]
    lines += [f"  b{40 + i}: {{provider: p{i}}}" for i in range(sites)]
    lines.append("hosts:")
    for n in range(servers):
        site, i = 40 + n // per_site, n % per_site
        lines.append(f"  b{site}-s-{i + 1}: {{address: 10.77.{site}.{11 + i}, site: b{site}, roles: [app]}}")
    return "\n".join(lines) + "\n"


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--per-site", type=int, default=10)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to let the servers settle")
    args = parser.parse_args()

    started = time.monotonic()
    base = image.ensure_base(lambda m: print(f"  {m}", flush=True))
    print(f"base image: {time.monotonic() - started:.1f} s ({base.name})")

    with tempfile.TemporaryDirectory(prefix="deploykit-bench-lab-") as tmp:
        path = Path(tmp) / "bench-lab.yml"
        path.write_text(inventory_text(args.servers, args.per_site))
        lab = Lab.for_inventory(load_inventory(path))
        before = mem_available()
        try:
            started = time.monotonic()
            lab.up()
            print(f"lab up, {args.servers} servers to SSH: {time.monotonic() - started:.1f} s")
            time.sleep(args.idle)
            used = (before - mem_available()) / args.servers
            rows = lab.status()
            cgroup = sum(r.memory_bytes or 0 for r in rows) / len(rows)
            print(
                f"memory per idle server: {used / 2**20:.1f} MiB (MemAvailable drop), {cgroup / 2**20:.1f} MiB (cgroup)"
            )
            victim = lab.layout.servers[0].name
            started = time.monotonic()
            lab.kill([victim])
            killed = time.monotonic() - started
            started = time.monotonic()
            lab.start([victim])
            print(f"kill: {killed * 1000:.0f} ms; start -> SSH: {time.monotonic() - started:.2f} s")
        finally:
            started = time.monotonic()
            lab.down()
            print(f"lab down: {time.monotonic() - started:.1f} s; left behind: {lab.remains() or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
