"""Benchmark the first apply of the whole stack: onto preinstalled lab servers and onto BARE ones (as a provider
delivers them: every package installed by deploykit's install path from the lab's repository), side by side.

    sudo .venv/bin/python bench/first_apply.py [--servers 9|51] [--kinds preinstalled,bare]

9 servers: inventories/lab.yml. 51 servers: a generated inventory of the same shape (3 providers, one site each;
per site 2 lb, 14 app+worker, 1 data host; app workers 1 so that PostgreSQL's connection slots suffice without a
pooler, see issue 14). For each kind: `lab up` (time to SSH), `apply --yes` (the first apply), a no-op `plan`,
the smoke test, then `lab down`. Prints the figures and the ratio bare / preinstalled. The lab is removed at the
end, also on failure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab

ROOT = Path(__file__).resolve().parent.parent
SITES = (("fra1", "hetzner", 1), ("rbx1", "ovh", 2), ("ams1", "leaseweb", 3))


def inventory_51(workers: int | None = 1) -> str:
    """The 51-server inventory; `workers`: the app's gunicorn workers per host (None: the app's default, as
    bench/stack_scale.py runs it with PgBouncer bounding PostgreSQL's connections)."""
    lines = ["version: 1", "name: bench-first", "domain: bench.lab", "failure_domains: [provider, site]",
             "ssh: {user: root, port: 22, identity_file: .lab/id_ed25519, known_hosts: .lab/known_hosts}",
             "mesh: {network: 10.77.128.0/17}", "sites:"]
    lines += [f"  {s}: {{provider: {p}, vip: 10.77.{o}.100, interface: host0}}" for s, p, o in SITES]
    lines.append("hosts:")
    for s, _, o in SITES:
        lines.append(f"  {s}-lb-[1:2]: {{address: 10.77.{o}.11, site: {s}, roles: [lb]}}")
        lines.append(f"  {s}-app-[1:14]: {{address: 10.77.{o}.21, site: {s}, roles: [app, worker]}}")
        lines.append(f"  {s}-data-1: {{address: 10.77.{o}.61, site: {s}, roles: [db, etcd, cache]}}")
    app = "batch_size: 7" if workers is None else f"workers: {workers}, batch_size: 7"
    lines += ["services:", "  db: {synchronous: true, watchdog: false}", f"  app: {{{app}}}"]
    return "\n".join(lines) + "\n"


def deploykit(*args: str, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "deploykit", *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return time.monotonic() - t0, r


def run_kind(inventory: Path, bare: bool) -> dict[str, float | str]:
    kind = "bare" if bare else "preinstalled"
    lab = Lab.for_inventory(load_inventory(inventory), bare=bare)
    out: dict[str, float | str] = {"kind": kind}
    try:
        t0 = time.monotonic()
        lab.up()
        out["lab up"] = time.monotonic() - t0
        took, r = deploykit("apply", str(inventory), "--yes", "--no-diff")
        out["first apply"] = took
        if r.returncode != 0:
            print(r.stdout[-3000:], r.stderr[-3000:], file=sys.stderr)
            out["result"] = f"apply FAILED (exit {r.returncode})"
            return out
        took, r = deploykit("plan", str(inventory))
        out["no-op plan"] = took
        took, smoke = deploykit("lab", "smoke", str(inventory))
        out["result"] = "ok" if r.returncode == 0 and smoke.returncode == 0 else (
            f"plan exit {r.returncode}, smoke exit {smoke.returncode}")
        return out
    finally:
        lab.down()


def cell(row: dict[str, float | str], key: str, width: int) -> str:
    v = row.get(key)
    return f"{v:{width}.1f}" if isinstance(v, float) else f"{'-':>{width}}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, choices=(9, 51), default=9)
    ap.add_argument("--kinds", default="preinstalled,bare")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="deploykit-bench-first-") as tmp:
        inventory = Path(tmp) / "inventory.yml"
        if args.servers == 9:
            shutil.copy(ROOT / "inventories" / "lab.yml", inventory)
        else:
            inventory.write_text(inventory_51())
        for kind in args.kinds.split(","):
            print(f"==> {args.servers} servers, {kind} ...", flush=True)
            rows.append(run_kind(inventory, kind == "bare"))
            print(f"    {rows[-1]}", flush=True)
    print(f"\n{'servers':>7} {'kind':13} {'lab up s':>9} {'first apply s':>14} {'no-op plan s':>13}  result")
    for row in rows:
        print(f"{args.servers:7d} {row['kind']:13} {cell(row, 'lab up', 9)} {cell(row, 'first apply', 14)} "
              f"{cell(row, 'no-op plan', 13)}  {row.get('result', '')}")
    times = {r["kind"]: r.get("first apply") for r in rows}
    pre, bare = times.get("preinstalled"), times.get("bare")
    if isinstance(pre, float) and isinstance(bare, float):
        print(f"first apply bare / preinstalled: {bare / pre:.2f}x (+{bare - pre:.0f} s installing packages)")
    return 0 if all(r.get("result") == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
