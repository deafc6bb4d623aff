"""Benchmark ("the 500-server day", part 5): deploykit's apply on N lab servers vs the SSH floor, pyinfra, Ansible.

On 10 to 200 servers, one run per size, each tool from fresh servers, bare pyinfra and Ansible doing the same work.

    sudo .venv/bin/python bench/apply_scale.py [--servers 10,50,100] [--tools deploykit,pyinfra,ansible] [--keep]
    .venv/bin/python bench/apply_scale.py --generate-only DIR [--servers 10]   # write every file; start nothing

What is applied. The inventory's hosts have `roles: []` (accepted by validation, with one warning per entry), so
they get only deploykit's every-host services: base (sshd drop-in, nftables firewall, sysctls, /etc/hosts) AND
mesh (WireGuard between every pair of hosts: a key pair made on each host, a config naming every other host,
wg-quick@mesh0 started). deploykit cannot apply base without the mesh: mesh runs on every host and the inventory
has no switch for it. So the closest honest equivalent is both, and the peers do both, generated from deploykit's
own desired state (bench/scale_peers.py): the same packages, the same files with the content deploykit renders
(the mesh config from a template filled with the keys each tool's own run reads from the hosts), the same
checks, after-change commands, units and waits. The lab's preinstalled image already has every package: a
"first run" checks them, writes 7 files per host, loads the firewall and sysctls, reloads sshd, starts nftables
and the mesh; nothing is downloaded.

Per size: `lab up` (3 sites at 3 providers, 10.77.81-83.0/24), then
  a. floor: one SSH connection + `true` per host, all at once; OpenSSH `ssh` processes (the lab's key and
     known_hosts, BatchMode, no ControlMaster) and paramiko (deploykit's and pyinfra's SSH library, one thread
     per host); median of 3 each.
  b. deploykit (`python -m deploykit`): first `apply --yes`, a no-op `apply --yes`, a no-op `plan`.
  c. pyinfra (`pyinfra inventory.py deploy.py -y --parallel N --json`): first run, no-op run.
  d. Ansible (ansible-core in its own venv, installed with pip if missing; forks N, pipelining, strict host keys
     against the lab's known_hosts; a fresh ControlPath directory per run, so no run reuses the previous one's
     connections): first run, no-op run.
Each tool's first run starts from fresh servers: the first tool's from `lab up`, every later one's after `wipe`
of every server (new disk, host key and machine id; docs/lab.md). After a peer's runs, `deploykit plan` on its
result checks the equivalence (expected: nothing to change). Prints a table per size (seconds, ratio to the
OpenSSH floor, controller CPU) and the ratios deploykit/pyinfra and deploykit/ansible, first run and no-op run.

Memory: the lab does not check it. A lab server costs ~12 MiB idle (docs/lab.md); during these runs it also runs
wireguard-go, SSH sessions and (Ansible) module processes. Each size is refused unless MemAvailable covers
`--mib-per-server` per server, the controller's share per host (more with Ansible: a forked worker and its ssh
per host, measured ~22 MiB with 50 local forks) and a reserve. The lab is removed at the end, also on failure
(`--keep` leaves the last size's lab and its directory up); the work directory (inventories, generated files, every
run's output under logs/) is kept when something failed. Traffic goes only to the lab's servers (10.77.0.0/16).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

import scale_peers

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.state import load_state

NAME = "bench-scale"
SITES = (("fra1", "hetzner", 81), ("rbx1", "ovh", 82), ("ams1", "leaseweb", 83))
PER_SITE_MAX = 244  # .11 to .254 of a site's /24
LAB_RANGE = IPv4Network("10.77.0.0/16")
TOOLS = ("deploykit", "pyinfra", "ansible")
ANSIBLE_REQUIREMENT = "ansible-core>=2.17,<2.20"
SERVER_MIB = 48  # a lab server during the runs: ~12 idle + wireguard-go + SSH sessions + shells
CONTROLLER_MIB_PER_HOST = 8  # an ssh client process (the floor) or a connection of deploykit/pyinfra
ANSIBLE_MIB_PER_HOST = 40  # a forked worker, its ssh and ControlPersist master, a module's python on the host
RESERVE_MIB = 1024
RUN_TIMEOUT_S = 7200  # Ansible at 200 servers: ~20-30 min a run on 2 vCPUs (estimate)
SUMMARY = re.compile(r"(\d+) hosts: (\d+) to change, (\d+) unchanged")
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def inventory_text(servers: int) -> str:
    """`servers` hosts without roles over 3 sites at 3 providers (as bench/first_apply.py's 51), one /24 each."""
    lines = ["version: 1", f"name: {NAME}", "domain: bench.lab", "failure_domains: [provider, site]",
             "ssh: {user: root, port: 22, identity_file: .lab/id_ed25519, known_hosts: .lab/known_hosts}",
             "mesh: {network: 10.77.128.0/17}", "sites:"]
    lines += [f"  {s}: {{provider: {p}, interface: host0}}" for s, p, _ in SITES]
    lines.append("hosts:")
    for i, (site, _, octet) in enumerate(SITES):
        count = servers // len(SITES) + (1 if i < servers % len(SITES) else 0)
        if count:
            lines.append(f"  {site}-n-[1:{count}]: {{address: 10.77.{octet}.11, site: {site}, roles: []}}")
    return "\n".join(lines) + "\n"


def mib_needed(servers: int, tools: tuple[str, ...], per_server: int) -> int:
    per_host = per_server + CONTROLLER_MIB_PER_HOST + (ANSIBLE_MIB_PER_HOST if "ansible" in tools else 0)
    return servers * per_host + RESERVE_MIB


def memory_refusals(sizes: list[int], tools: tuple[str, ...], per_server: int, available: int) -> list[str]:
    """One line per size whose servers would not fit in `available` MiB (empty: every size fits)."""
    too_big = [n for n in sizes if mib_needed(n, tools, per_server) > available]
    fits = max((n for n in range(1, max(too_big, default=1)) if mib_needed(n, tools, per_server) <= available),
               default=0)
    return [f"refused: {n} servers need ~{mib_needed(n, tools, per_server) / 1024:.1f} GiB ({per_server} MiB per "
            f"server, {CONTROLLER_MIB_PER_HOST + (ANSIBLE_MIB_PER_HOST if 'ansible' in tools else 0)} MiB per host "
            f"on this machine for --tools {','.join(tools)}, a {RESERVE_MIB} MiB reserve); MemAvailable is "
            f"{available / 1024:.1f} GiB: at most {fits} servers fit" for n in too_big]


def mib_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


@dataclass
class Row:
    name: str
    seconds: float | None = None
    cpu: float | None = None  # the controller's CPU seconds (the tool's processes, user + system)
    result: str = ""
    ok: bool = True


@dataclass
class Timed:
    seconds: float
    cpu: float
    rc: int
    stdout: str
    log: Path


def timed(argv: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> Timed:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=RUN_TIMEOUT_S)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, str(e.stdout or ""), f"timed out after {RUN_TIMEOUT_S} s"
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    log.write_text(f"$ {shlex.join(argv)}\n# exit {rc} after {seconds:.1f} s\n--- stdout\n{out}\n--- stderr\n{err}")
    if rc != 0:
        print(f"    {argv[0]} ... exited {rc}; last lines (all in {log}):\n{(out + err)[-1500:]}", flush=True)
    return Timed(seconds, cpu, rc, out, log)


# the floor ------------------------------------------------------------------------------------------------------
def floor_openssh(lab: Lab) -> float:
    argvs = [["ssh", "-F", "/dev/null", "-o", "ControlMaster=no", "-o", "ControlPath=none",
              *lab.ssh_argv(name, ["true"])[1:]] for name in lab.layout.names]
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for a in argvs]
    errors = [p.communicate()[1] for p in procs]
    took = time.monotonic() - t0
    if failed := [(a, e) for a, e, p in zip(argvs, errors, procs, strict=True) if p.returncode != 0]:
        raise RuntimeError(f"floor: {len(failed)} ssh failed, e.g. {shlex.join(failed[0][0])}: {failed[0][1]!r}")
    return took


def floor_paramiko(lab: Lab) -> float:
    import paramiko

    st = lab.state

    def one(name: str) -> None:
        client = paramiko.SSHClient()
        client.load_host_keys(str(st.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(str(lab.layout.server(name).address), port=st.ssh_port, username="root",
                       key_filename=str(st.identity_file), allow_agent=False, look_for_keys=False, timeout=10,
                       banner_timeout=10, auth_timeout=10)
        try:
            _, out, _ = client.exec_command("true")
            if out.channel.recv_exit_status() != 0:
                raise RuntimeError(f"floor: `true` failed on {name}")
        finally:
            client.close()

    names = lab.layout.names
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        t0 = time.monotonic()
        list(pool.map(one, names))
        return time.monotonic() - t0


def floors(lab: Lab, runs: int = 3) -> list[Row]:
    rows = []
    for label, measure in (("OpenSSH", floor_openssh), ("paramiko", floor_paramiko)):
        times = sorted(measure(lab) for _ in range(runs))
        rows.append(Row(f"floor, {label}", statistics.median(times),
                        result=f"median of {runs}: {' '.join(f'{t:.2f}' for t in times)}"))
    return rows


# the tools ------------------------------------------------------------------------------------------------------
@dataclass
class Setup:
    servers: int
    inventory: Path
    pyinfra_dir: Path
    ansible_dir: Path
    logs: Path
    deploykit_env: dict[str, str]
    ansible_bin: Path | None


def deploykit_summary(t: Timed) -> tuple[str, int | None]:
    m = SUMMARY.search(t.stdout)
    return (m.group(0), int(m.group(2))) if m else ("no plan summary in the output", None)


def run_deploykit(s: Setup) -> list[Row]:
    dk = [sys.executable, "-m", "deploykit"]
    inv = str(s.inventory)
    for stale in s.inventory.parent.glob(f"{NAME}.*"):  # a first apply starts with no stored facts either
        if stale.suffix in (".facts", ".secrets"):
            stale.unlink()
    first = timed([*dk, "apply", inv, "--yes", "--no-diff"], s.logs / "deploykit-first.log", env=s.deploykit_env)
    text, _ = deploykit_summary(first)
    rows = [Row("deploykit first apply", first.seconds, first.cpu, text, first.rc == 0)]
    if first.rc != 0:
        return rows
    noop = timed([*dk, "apply", inv, "--yes", "--no-diff"], s.logs / "deploykit-noop.log", env=s.deploykit_env)
    text, changes = deploykit_summary(noop)
    rows.append(Row("deploykit no-op apply", noop.seconds, noop.cpu, text, noop.rc == 0 and changes == 0))
    plan = timed([*dk, "plan", inv], s.logs / "deploykit-plan.log", env=s.deploykit_env)
    text, changes = deploykit_summary(plan)
    rows.append(Row("deploykit no-op plan", plan.seconds, plan.cpu, text, plan.rc == 0 and changes == 0))
    return rows


def pyinfra_result(t: Timed) -> tuple[str, int | None]:
    try:
        results = json.loads(t.stdout)["results"]
        totals, failed = results["totals"], results["failed_hosts"]
    except (ValueError, KeyError, TypeError):
        return "no JSON results in the output", None
    hosts = {h for op in results["operations"] for h in op["success"]}
    text = f"{totals['success']} op(s) changed on {len(hosts)} host(s), {totals['error']} error(s)"
    return text + (f", failed: {', '.join(failed)}" if failed else ""), (
        totals["success"] if not failed and not totals["error"] else None)


def run_pyinfra(s: Setup) -> list[Row]:
    argv = [str(Path(sys.executable).parent / "pyinfra"), "inventory.py", "deploy.py", "-y",
            "--parallel", str(s.servers), "--json"]
    rows = []
    for label in ("first", "no-op"):
        t = timed(argv, s.logs / f"pyinfra-{label}.log", cwd=s.pyinfra_dir)
        text, changed = pyinfra_result(t)
        ok = t.rc == 0 and changed is not None and (label == "first" or changed == 0)
        rows.append(Row(f"pyinfra {label} run", t.seconds, t.cpu, text, ok))
        if t.rc != 0:
            break
    return rows


def ansible_env(s: Setup, run: str) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(s.ansible_dir / "ansible.cfg"),
            "ANSIBLE_HOME": str(s.ansible_dir / "home"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(s.ansible_dir / f"cp-{run}")}


def run_ansible(s: Setup) -> list[Row]:
    assert s.ansible_bin is not None
    rows = []
    for label in ("first", "no-op"):
        t = timed([str(s.ansible_bin), "-i", "inventory.yml", "playbook.yml"], s.logs / f"ansible-{label}.log",
                  cwd=s.ansible_dir, env=ansible_env(s, label))
        recap = [(int(c), int(u), int(f)) for _, _, c, u, f in RECAP.findall(t.stdout)]
        changed = sum(1 for c, _, _ in recap if c)
        bad = sum(1 for _, u, f in recap if u or f)
        text = f"{changed} host(s) changed ({sum(c for c, _, _ in recap)} task results), {bad} failed/unreachable"
        ok = t.rc == 0 and len(recap) == s.servers and not bad and (label == "first" or changed == 0)
        rows.append(Row(f"ansible {label} run", t.seconds, t.cpu, text, ok))
        if t.rc != 0:
            break
    return rows


def equivalence(s: Setup, tool: str) -> str:
    """deploykit's plan on what a peer left: nothing to change means the same files, packages and units."""
    t = timed([sys.executable, "-m", "deploykit", "plan", str(s.inventory), "--no-diff"],
              s.logs / f"equivalence-{tool}.log", env=s.deploykit_env)
    text, changes = deploykit_summary(t)
    verdict = "same state" if t.rc == 0 and changes == 0 else f"DIFFERS (see {t.log})"
    return f"deploykit plan after {tool}: {text}: {verdict}"


RUNNERS = {"deploykit": run_deploykit, "pyinfra": run_pyinfra, "ansible": run_ansible}


# preparing and running one size ---------------------------------------------------------------------------------
def prepare(servers: int, root: Path, ansible_bin: Path | None, key_file: Path) -> Setup:
    """Every file a size's runs read: the deploykit inventory, the pyinfra deploy, the Ansible playbook."""
    inventory = root / "inventory" / f"{NAME}.yml"
    inventory.parent.mkdir(parents=True, exist_ok=True)
    inventory.write_text(inventory_text(servers))
    inv = load_inventory(inventory)
    outside = [h.name for h in inv.hosts if h.address not in LAB_RANGE]
    if outside or not inv.mesh.network.subnet_of(LAB_RANGE):
        raise SystemExit(f"generated inventory leaves {LAB_RANGE}: {outside or inv.mesh.network}")
    eq = scale_peers.derive(inv)
    setup = Setup(servers, inventory, root / "pyinfra", root / "ansible", root / "logs",
                  {**os.environ, "DEPLOYKIT_KEY_FILE": str(key_file)}, ansible_bin)
    scale_peers.write_pyinfra(eq, setup.pyinfra_dir)
    scale_peers.write_ansible(eq, setup.ansible_dir, forks=servers)
    setup.logs.mkdir(parents=True, exist_ok=True)
    return setup


def check_generated(s: Setup, tools: tuple[str, ...]) -> None:
    """Cheap checks before any server starts: the inventory validates, the peers' files parse."""
    checks: list[tuple[str, list[str], Path | None, dict[str, str] | None]] = [
        ("deploykit plan --offline", [sys.executable, "-m", "deploykit", "plan", "--offline", str(s.inventory)],
         None, s.deploykit_env)]
    if "pyinfra" in tools:
        compile((s.pyinfra_dir / "deploy.py").read_text(), str(s.pyinfra_dir / "deploy.py"), "exec")
        checks.append(("pyinfra debug-inventory", [str(Path(sys.executable).parent / "pyinfra"), "inventory.py",
                                                   "debug-inventory"], s.pyinfra_dir, None))
    if "ansible" in tools and s.ansible_bin is not None:
        checks.append(("ansible-playbook --syntax-check", [str(s.ansible_bin), "--syntax-check", "-i",
                                                          "inventory.yml", "playbook.yml"], s.ansible_dir,
                       ansible_env(s, "check")))
    for label, argv, cwd, env in checks:
        t = timed(argv, s.logs / f"check-{label.split()[0]}.log", cwd=cwd, env=env)
        if t.rc != 0:
            raise SystemExit(f"{label} failed on the generated files (see {t.log})")


def run_size(s: Setup, tools: tuple[str, ...], keep: bool) -> tuple[list[Row], list[str]]:
    inv = load_inventory(s.inventory)
    if load_state(inv.name) is not None:
        print(f"    a lab {inv.name} from an earlier run exists: removing it first", flush=True)
        Lab.for_inventory(inv).down()
    lab = Lab.for_inventory(inv)
    notes: list[str] = []
    try:
        t0 = time.monotonic()
        lab.up()
        notes.append(f"lab up {time.monotonic() - t0:.1f} s")
        print(f"    lab up: {notes[-1]}", flush=True)
        rows = floors(lab)
        for i, tool in enumerate(tools):
            if i:
                t0 = time.monotonic()
                lab.wipe(list(lab.layout.names))
                notes.append(f"wipe before {tool} {time.monotonic() - t0:.1f} s")
            print(f"    {tool} ...", flush=True)
            rows += RUNNERS[tool](s)
            if tool != "deploykit" and any(r.ok for r in rows if r.name == f"{tool} first run"):
                notes.append(equivalence(s, tool))
        return rows, notes
    finally:
        if keep:
            print(f"    --keep: lab {lab.name} left up; remove it with: sudo deploykit lab down -i {s.inventory}")
        else:
            lab.down()


# output ---------------------------------------------------------------------------------------------------------
def print_size(servers: int, rows: list[Row], notes: list[str]) -> None:
    floor = next((r.seconds for r in rows if r.name == "floor, OpenSSH"), None)
    print(f"\n== {servers} servers ({'; '.join(n for n in notes if not n.startswith('deploykit plan'))})")
    print("(x floor: seconds / the OpenSSH floor; ctl CPU s: the tool's processes on this machine, user + system)")
    print(f"{'measurement':24} {'s':>8} {'x floor':>8} {'ctl CPU s':>10}  result")
    for r in rows:
        s = f"{r.seconds:8.2f}" if r.seconds is not None else f"{'-':>8}"
        x = f"{r.seconds / floor:8.1f}" if r.seconds is not None and floor else f"{'-':>8}"
        cpu = f"{r.cpu:10.1f}" if r.cpu is not None else f"{'-':>10}"
        print(f"{r.name:24} {s} {x} {cpu}  {r.result}{'' if r.ok else '  [FAILED]'}")
    for n in notes:
        if n.startswith("deploykit plan"):
            print(f"  equivalence: {n}")
    by = {r.name: r.seconds for r in rows if r.ok}
    for peer in ("pyinfra", "ansible"):
        pairs = [("first run", by.get("deploykit first apply"), by.get(f"{peer} first run")),
                 ("no-op run", by.get("deploykit no-op apply"), by.get(f"{peer} no-op run"))]
        cells = [f"{label} {dk / other:.2f}x" for label, dk, other in pairs if dk and other]
        if cells:
            print(f"  deploykit / {peer}: {', '.join(cells)} (below 1: deploykit took less time)")


def print_summary(results: dict[int, list[Row]]) -> None:
    names = ["floor, OpenSSH", "floor, paramiko", "deploykit first apply", "deploykit no-op apply",
             "deploykit no-op plan", "pyinfra first run", "pyinfra no-op run", "ansible first run", "ansible no-op run"]
    short = ["ssh", "paramiko", "dk first", "dk no-op", "dk plan", "pyi first", "pyi no-op", "ans first", "ans no-op"]
    print("\nsummary (seconds; '-' not run or failed)")
    print(f"{'servers':>7} " + " ".join(f"{s:>9}" for s in short))
    for servers, rows in results.items():
        by = {r.name: r.seconds for r in rows if r.ok}
        print(f"{servers:7d} " + " ".join(f"{by[n]:9.2f}" if by.get(n) is not None else f"{'-':>9}" for n in names))


def print_notes(tools: tuple[str, ...]) -> None:
    try:
        from deploykit.execute.executor import MAX_PARALLEL
    except ImportError:
        MAX_PARALLEL = "?"
    print("What runs (details: bench/apply_scale.py's docstring):")
    print("  all tools: deploykit's every-host services (base AND mesh: deploykit has no base-only apply) on hosts\n"
          "  with no roles; the lab image has every package, so a first run installs nothing: it writes 7 files\n"
          "  per host, loads firewall and sysctls, reloads sshd, starts nftables and wg-quick@mesh0, waits for it.")
    if "deploykit" in tools:
        print(f"  deploykit: its own parallelism (at most {MAX_PARALLEL} hosts at once, ssh.max_startups connection "
              "starts)")
    if "pyinfra" in tools:
        print("  pyinfra: --parallel N; files.put/template, apt.packages, systemd.service; a file's check after it is\n"
              "  in place (files.put has no check-before-replace)")
    if "ansible" in tools:
        print("  ansible: forks N, pipelining, gather_facts false; copy/template with validate, systemd_service;\n"
              "  packages by dpkg-query + apt-get (ansible.builtin.apt needs python3-apt, absent from the lab image\n"
              "  and not installable without a route out)")


# main -----------------------------------------------------------------------------------------------------------
def ensure_ansible(venv: Path) -> Path:
    binary = venv / "bin" / "ansible-playbook"
    if not binary.exists():
        print(f"installing {ANSIBLE_REQUIREMENT} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", ANSIBLE_REQUIREMENT], check=True)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    print(f"ansible: {version.splitlines()[0]} ({binary})")
    return binary


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--servers", default="10,50", help="comma-separated sizes (default 10,50; 100-200 where the "
                                                      "memory allows)")
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help=f"comma-separated, in run order (default {','.join(TOOLS)})")
    ap.add_argument("--keep", action="store_true", help="leave the last size's lab (and its directory) up")
    ap.add_argument("--ansible-venv", type=Path, default=Path("/tmp/deploykit-bench-ansible"),
                    help="venv with ansible-core (made with pip if missing)")
    ap.add_argument("--mib-per-server", type=int, default=SERVER_MIB, help="memory estimate of one lab server")
    ap.add_argument("--generate-only", type=Path, metavar="DIR",
                    help="write each size's inventory, pyinfra deploy and Ansible playbook under DIR; start nothing")
    args = ap.parse_args()
    try:
        args.sizes = [int(x) for x in args.servers.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--servers {args.servers}: give numbers, e.g. 10,50,100")
    if not args.sizes or any(n < 1 or n > PER_SITE_MAX * len(SITES) for n in args.sizes):
        ap.error(f"--servers: each size from 1 to {PER_SITE_MAX * len(SITES)}")
    args.tool_list = tuple(t.strip() for t in args.tools.split(",") if t.strip())
    if not args.tool_list or any(t not in TOOLS for t in args.tool_list) or len(set(args.tool_list)) != len(
            args.tool_list):
        ap.error(f"--tools: one or more of {', '.join(TOOLS)}, each once")
    return args


def main() -> int:
    args = parse_args()
    tools: tuple[str, ...] = args.tool_list
    if args.generate_only:
        ansible_bin = args.ansible_venv / "bin" / "ansible-playbook"
        for n in args.sizes:
            s = prepare(n, args.generate_only / str(n), ansible_bin if ansible_bin.exists() else None,
                        args.generate_only / "keys" / f"{NAME}.key")
            check_generated(s, tools)
            print(f"{n} servers: {s.inventory}, {s.pyinfra_dir}, {s.ansible_dir} (checked)")
        return 0
    if os.geteuid() != 0:
        print("the lab needs root: sudo .venv/bin/python bench/apply_scale.py ...", file=sys.stderr)
        return 2
    if refused := memory_refusals(args.sizes, tools, args.mib_per_server, mib_available()):
        print("\n".join(refused), file=sys.stderr)
        return 2
    ansible_bin = ensure_ansible(args.ansible_venv) if "ansible" in tools else None
    work = Path(tempfile.mkdtemp(prefix="deploykit-bench-scale-"))
    print(f"work directory (inventories, generated deploys, logs): {work}")
    print_notes(tools)
    results: dict[int, list[Row]] = {}
    ok = False
    try:
        for i, n in enumerate(args.sizes):
            s = prepare(n, work / str(n), ansible_bin, work / "keys" / f"{NAME}.key")
            check_generated(s, tools)
            need, available = mib_needed(n, tools, args.mib_per_server), mib_available()
            if need > available:
                print(f"skipped {n} servers: need ~{need} MiB, MemAvailable is now {available} MiB")
                continue
            print(f"==> {n} servers, tools {', '.join(tools)}", flush=True)
            rows, notes = run_size(s, tools, keep=args.keep and i == len(args.sizes) - 1)
            results[n] = rows
            print_size(n, rows, notes)
        ok = bool(results) and all(r.ok for rows in results.values() for r in rows)
    finally:
        if results:
            print_summary(results)
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work} (each run's output in its logs/)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
