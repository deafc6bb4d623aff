"""Benchmark: validate and plan (offline) 500- and 5,000-host, 3-provider inventories, wall time including start-up.

Targets: at most 1 s for each command at 500 hosts (issue 2); 5,000 hosts at most 3x the 500-host time (issue 8:
no superlinear part), also with `host` as a failure domain (one resilience scenario per host).
Baseline in the same run: the same commands on the 9-host lab inventory, and a bare `python -c pass`.
Usage: python bench/plan_scale.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 1.0
SCALE_RATIO = 3.0


def generate(n_hosts: int = 500, levels: str = "provider, site, rack") -> str:
    """Hosts listed one by one (the slowest form to parse), 3 providers, 2 racks per site."""
    sites = [("fra1", "hetzner", 10), ("rbx1", "ovh", 20), ("ams1", "leaseweb", 30)]
    lines = ["version: 1", "name: bench", "domain: bench.example", f"failure_domains: [{levels}]",
             "sites:"]
    lines += [f"  {s}: {{provider: {p}, vip: 10.{o}.0.100}}" for s, p, o in sites]
    lines.append("hosts:")
    per_site = n_hosts // 3
    count = 0
    for s, _, o in sites:
        fixed = [("lb-1", "[lb]", 11), ("lb-2", "[lb]", 12), ("db-1", "[db, etcd, cache]", 101)]
        for name, roles, last in fixed:
            lines.append(f"  {s}-{name}: {{address: 10.{o}.0.{last}, site: {s}, rack: r1, roles: {roles}}}")
            count += 1
        n_app = per_site - len(fixed) + (n_hosts - 3 * per_site if s == "ams1" else 0)
        for i in range(n_app):
            rack = "r1" if i % 2 else "r2"
            lines.append(f"  {s}-app-{i + 1:03d}: {{address: 10.{o}.{1 + i // 200}.{10 + i % 200}, site: {s}, "
                         f"rack: {rack}, roles: [app, worker]}}")
            count += 1
    assert count == n_hosts, count
    return "\n".join(lines) + "\n"


def timed(argv: list[str], runs: int) -> tuple[float, float, int]:
    times = []
    rc = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - t0)
        rc = proc.returncode
        if rc not in (0,):
            print(proc.stderr, file=sys.stderr)
    return statistics.median(times), max(times), rc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "deploykit.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        inv = {}
        for n in (500, 5000):
            inv[n] = Path(tmp) / f"bench-{n}.yml"
            inv[n].write_text(generate(n))
            inv[n, "host"] = Path(tmp) / f"bench-{n}-host.yml"
            inv[n, "host"].write_text(generate(n, "provider, site, rack, host"))
        lab = ROOT / "inventories" / "lab.yml"
        rows = [
            ("python -c pass (interpreter start-up)", [sys.executable, "-c", "pass"]),
            ("validate lab.yml (9 hosts)", [*exe, "validate", str(lab)]),
            ("plan --offline lab.yml (9 hosts)", [*exe, "plan", "--offline", str(lab)]),
        ]
        for n in (500, 5000):
            rows += [
                (f"validate {n} hosts", [*exe, "validate", str(inv[n])]),
                (f"plan --offline {n} hosts", [*exe, "plan", "--offline", str(inv[n])]),
                (f"plan --offline --json {n} hosts", [*exe, "plan", "--offline", "--json", str(inv[n])]),
                (f"plan --offline {n} hosts, host level", [*exe, "plan", "--offline", str(inv[n, "host"])]),
            ]
        results = {}
        print(f"{'command':44} {'median s':>9} {'max s':>7} {'rc':>3}")
        for label, argv in rows:
            med, worst, rc = timed(argv, args.runs)
            results[label] = med
            print(f"{label:44} {med:9.3f} {worst:7.3f} {rc:3d}")
        base = results["plan --offline lab.yml (9 hosts)"]
        big_plan = results["plan --offline 500 hosts"]
        print(f"ratio plan 500 hosts / 9 hosts: {big_plan / base:.2f}x")
        bare = results["python -c pass (interpreter start-up)"]
        print(f"ratio plan 500 hosts / bare interpreter: {big_plan / bare:.1f}x")
        worst_big = max(results["validate 500 hosts"], big_plan, results["plan --offline --json 500 hosts"])
        ok = worst_big <= TARGET_S
        print(f"target <= {TARGET_S:.1f} s for 500 hosts: {'met' if ok else 'MISSED'} ({worst_big:.3f} s)")
        for what in ("validate", "plan --offline", "plan --offline --json"):
            ratio = results[f"{what} 5000 hosts"] / results[f"{what} 500 hosts"]
            ok = ok and ratio <= SCALE_RATIO
            print(f"ratio {what} 5000 / 500 hosts: {ratio:.2f}x (target <= {SCALE_RATIO:.0f}x)")
        ratio = results["plan --offline 5000 hosts, host level"] / results["plan --offline 500 hosts, host level"]
        ok = ok and ratio <= SCALE_RATIO
        print(f"ratio plan --offline 5000 / 500 hosts with a host failure domain: {ratio:.2f}x "
              f"(target <= {SCALE_RATIO:.0f}x)")
        print(f"targets: {'met' if ok else 'MISSED'}")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
