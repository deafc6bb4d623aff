"""One lab server on this machine: an overlay on the base, a cgroup of its own, a booted systemd-nspawn.

The machine's PID 1 need not be systemd: nspawn runs with `--register=no --keep-unit` in a cgroup made by
hand, started by a small `sh` supervisor in its own session that restarts it when the server reboots (nspawn
exits 133, as systemd-nspawn@.service handles it). Killing a server is SIGKILL of the container's PID 1:
its PID namespace and network vanish at once, as on power loss; the overlay (its disk) stays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from deploykit.errors import LabError
from deploykit.lab.layout import Server
from deploykit.lab.proc import run
from deploykit.lab.processes import Process, read_processes

PROPAGATE_ROOT = Path("/run/systemd/nspawn/propagate")

CGROUP_ROOT = Path("/sys/fs/cgroup")
REBOOT_EXIT_CODE = 133

# $0 = the inner script, $1 = cgroup dirs joined by ':', then the nspawn argv.
SUPERVISOR_SCRIPT = 'while :; do sh -c "$0" dklab-enter "$@"; rc=$?; [ "$rc" -eq 133 ] || exit "$rc"; done'
ENTER_CGROUPS_SCRIPT = 'IFS=:; for c in $1; do echo $$ > "$c/cgroup.procs" || exit 1; done; unset IFS; shift; exec "$@"'


# Run inside a server that never answered SSH (see Machine.diagnose): one short line per question.
DIAGNOSE_SCRIPT = r"""
echo "system: $(systemctl is-system-running 2>&1)"
echo "failed units: $(systemctl list-units --failed --plain --no-legend 2>&1 | awk '{print $1}' | tr '\n' ' ')"
echo "queued jobs: $(systemctl list-jobs --no-legend 2>&1 | head -5 | awk '{print $2 "/" $4}' | tr '\n' ' ')"
echo "ssh: $(systemctl is-active ssh 2>&1)"
journalctl -u ssh -n 3 --no-pager -q 2>&1 | sed 's/^/  /'
echo "addresses: $(ip -br addr 2>&1 | tr -s ' ' | tr '\n' ';')"
"""


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> list[Path]:
    """The hierarchies a server's cgroup is made in: v1 name=systemd (+ unified, memory, cpu), or pure v2."""
    if (root / "cgroup.controllers").is_file():
        return [root]
    found = [root / h for h in ("systemd", "unified", "memory") if (root / h).is_dir()]
    return found + ([root / "cpu"] if (root / "cpu" / "cpu.shares").is_file() else [])


LAB_CPU_SHARE = 32  # the whole lab weighs, against this machine's other processes, as this many busy ones


def cpu_writes(lab: str, name: str, weight: int, root: Path = CGROUP_ROOT) -> list[tuple[Path, str]]:
    """The cgroup files to write, in order, for a server's CPU share (layout.cpu_weight: 1 = a plain server)
    and its lab's: v1 `cpu.shares` (1024 per unit), v2 `cpu.weight` (100 per unit, the cpu controller enabled
    down to the server's cgroup). Empty when this machine has no cpu controller."""
    top = f"deploykit-lab-{lab}"
    if (root / "cgroup.controllers").is_file():
        if "cpu" not in (root / "cgroup.controllers").read_text().split():
            return []
        return [(root / "cgroup.subtree_control", "+cpu"), (root / top / "cgroup.subtree_control", "+cpu"),
                (root / top / "cpu.weight", str(min(10_000, 100 * LAB_CPU_SHARE))),
                (root / top / name / "cpu.weight", str(min(10_000, 100 * weight)))]
    if not (root / "cpu" / "cpu.shares").is_file():
        return []
    return [(root / "cpu" / top / "cpu.shares", str(1024 * LAB_CPU_SHARE)),
            (root / "cpu" / top / name / "cpu.shares", str(1024 * weight))]


def cgroup_dirs(lab: str, name: str, root: Path = CGROUP_ROOT) -> list[Path]:
    return [h / f"deploykit-lab-{lab}" / name for h in cgroup_hierarchies(root)]


def nspawn_argv(server: Server, root: Path, binds: tuple[tuple[Path, str], ...] = ()) -> list[str]:
    """`binds`: (directory on this machine, path in the server) mounted read-only (the bare lab's repository)."""
    return [
        "systemd-nspawn", "--boot", "--register=no", "--keep-unit", f"--machine={server.name}",
        f"--directory={root}", f"--network-bridge={server.segment.bridge}", "--resolv-conf=off",
        "--timezone=off", "--link-journal=no", "--console=read-only",
        # The TUN device: the mesh's wireguard-go (this machine's kernel has no WireGuard module) needs it.
        "--bind=/dev/net/tun",
        *(f"--bind-ro={src}:{dst}" for src, dst in binds),
    ]  # fmt: skip


def supervisor_argv(cgroups: list[Path], nspawn: list[str]) -> list[str]:
    return ["sh", "-c", SUPERVISOR_SCRIPT, ENTER_CGROUPS_SCRIPT, ":".join(str(c) for c in cgroups), *nspawn]


def network_unit(server: Server) -> str:
    seg = server.segment
    return (
        "[Match]\nName=host0\n\n"
        f"[Network]\nAddress={server.address}/{seg.network.prefixlen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        f"[Route]\nDestination=10.77.0.0/16\nGateway={seg.gateway}\n"
    )


class Machine:
    """A lab server's files and processes on this machine."""

    def __init__(self, lab: str, server: Server, directory: Path, binds: tuple[tuple[Path, str], ...] = ()) -> None:
        self.lab = lab
        self.binds = binds
        self.server = server
        self.directory = directory
        self.upper = directory / "upper"
        self.work = directory / "work"
        self.root = directory / "root"
        self.ready_marker = directory / "ready"
        self.console_log = directory / "console.log"
        self.supervisor_pid_file = directory / "supervisor.pid"

    @property
    def cgroups(self) -> list[Path]:
        return cgroup_dirs(self.lab, self.server.name)

    # disk -----------------------------------------------------------------------------------------------
    def is_created(self) -> bool:
        return self.ready_marker.is_file()

    def is_mounted(self) -> bool:
        return os.path.ismount(self.root)

    def mount(self, base: Path) -> None:
        if self.is_mounted():
            return
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={base},upperdir={self.upper},workdir={self.work}"
        run(["mount", "-t", "overlay", f"dklab-{self.server.name}", "-o", options, str(self.root)])

    def write_file(self, rel: str, content: str, mode: int = 0o644) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)

    def mark_ready(self) -> None:
        self.ready_marker.write_text("")

    def host_public_key(self) -> str:
        """The server's SSH host key, read from its own disk (the overlay's upper layer: mounted or not)."""
        return (self.upper / "etc/ssh/ssh_host_ed25519_key.pub").read_text()

    # processes ------------------------------------------------------------------------------------------
    def pids(self) -> list[int]:
        """Every process in the server's cgroup tree (systemd hierarchy)."""
        found: list[int] = []
        top = self.cgroups[0] if self.cgroups else None
        if top is None or not top.is_dir():
            return found
        for dirpath, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    found += [int(p) for p in Path(dirpath, "cgroup.procs").read_text().split()]
                except OSError:
                    continue
        return found

    def init_pid(self) -> int | None:
        """The container's PID 1, seen from the machine (the process whose innermost NSpid is 1)."""
        for pid in self.pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("NSpid:"):
                    ids = line.split()[1:]
                    if len(ids) >= 2 and ids[-1] == "1":
                        return pid
        return None

    def is_running(self) -> bool:
        return self.init_pid() is not None

    def supervisor_pid(self) -> int | None:
        try:
            pid = int(self.supervisor_pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if f"--machine={self.server.name}".encode() in cmdline else None

    def failure(self) -> str | None:
        """Why the server is not running, if its supervisor has given up (the console log's last line)."""
        if self.is_running() or self.supervisor_pid() is not None:
            return None
        try:
            lines = self.console_log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return lines[-1] if lines else "exited"

    @property
    def propagate_dir(self) -> Path:
        return PROPAGATE_ROOT / self.server.name

    def clear_propagate_dir(self) -> None:
        """systemd-nspawn refuses to boot a machine whose propagation directory (with a mount in it) was left
        by an nspawn that was SIGKILLed; unmount and remove it while the machine is not running."""
        d = self.propagate_dir
        if not d.exists():
            return
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4] == str(d) or line.split()[4].startswith(f"{d}/")]
        for mountpoint in sorted(mounts, key=len, reverse=True):
            run(["umount", "-l", mountpoint])
        run(["rm", "-rf", "--one-file-system", str(d)])

    def clear_stale_veth(self) -> None:
        """The kernel tears down a dead server's network namespace asynchronously (seconds, when many die at
        once, as on `lab down`); until then its host-side veth lingers and a new nspawn fails with "Failed to
        add new veth interfaces: File exists". The server is not running, so the veth is stale: delete it."""
        link = Path("/sys/class/net") / self.server.veth
        if link.exists():
            run(["ip", "link", "del", self.server.veth], check=False)
            deadline = time.monotonic() + 5
            while link.exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def start(self) -> None:
        """Boot the server (its disk must be mounted). A server already running is left as it is."""
        if self.is_running():
            return
        deadline = time.monotonic() + 5
        while self.supervisor_pid() is not None and time.monotonic() < deadline:  # the killed one, exiting
            time.sleep(0.02)
        if self.supervisor_pid() is None:
            self.clear_propagate_dir()
            self.clear_stale_veth()
        for c in self.cgroups:
            c.mkdir(parents=True, exist_ok=True)
        for path, value in cpu_writes(self.lab, self.server.name, self.server.cpu_weight):
            try:  # a share is a refinement: a machine that refuses it runs the lab with equal shares
                path.write_text(value)
            except OSError:
                pass
        with open(self.console_log, "ab") as log:
            proc = subprocess.Popen(
                supervisor_argv(self.cgroups, nspawn_argv(self.server, self.root, self.binds)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.supervisor_pid_file.write_text(str(proc.pid))

    def diagnose(self, timeout: float = 10) -> str:
        """What the server itself says about its boot, read from inside its namespaces (no SSH needed): the
        system state, failed units, sshd's status and its addresses; for a boot that never answered SSH."""
        pid = self.init_pid()
        if pid is None:
            return "not running"
        try:
            out = subprocess.run(["nsenter", "-t", str(pid), "-a", "sh", "-c", DIAGNOSE_SCRIPT],
                                 capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"no answer from inside within {timeout:.0f} s"
        return (out.stdout + out.stderr).strip() or f"nsenter exited {out.returncode}"

    def kill(self) -> bool:
        """Abrupt power loss: SIGKILL the container's PID 1. False if it was not running."""
        pid = self.init_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.init_pid() == pid and time.monotonic() < deadline:  # until nspawn has reaped it
            time.sleep(0.01)
        return True

    def processes(self) -> list[Process]:
        """The server's processes now: its supervisor and everything in its cgroup."""
        supervisor = self.supervisor_pid()
        return read_processes([*([supervisor] if supervisor is not None else []), *self.pids()])

    def stop(self) -> list[Process]:
        """Kill the server and everything of it (supervisor, nspawn), and wait until its cgroup is empty.

        Returns every process killed: a killed process stays in the process table (a zombie) until its parent
        reaps it, and the supervisor's and nspawn's parent is PID 1; callers wait for that once for all the
        servers they stop (`Lab._wait_until_reaped`)."""
        seen = {p.key: p for p in self.processes()}
        supervisor = self.supervisor_pid()
        if supervisor is not None:
            os.kill(supervisor, signal.SIGKILL)  # no restart after the kill below
        self.kill()
        deadline = time.monotonic() + 10
        while (left := self.pids()) and time.monotonic() < deadline:
            for p in read_processes(left):
                seen.setdefault(p.key, p)
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        if self.pids():
            raise LabError(f"{self.server.name}: processes left in {self.cgroups[0]} after SIGKILL")
        return list(seen.values())

    def remove(self, *, veth: bool = True) -> list[Process]:
        """Stop the server and remove its mount, cgroups and files (and its stale host-side veth, unless
        `veth` is False: another lab's server of the same name owns that link). Returns the processes killed
        (see `stop`)."""
        killed = self.stop()
        if self.is_mounted():
            run(["umount", str(self.root)])
        if self.is_mounted():
            raise LabError(f"{self.server.name}: {self.root} is still mounted")
        for top in self.cgroups:
            remove_cgroup_tree(top)
        self.clear_propagate_dir()
        if veth:
            self.clear_stale_veth()
        run(["rm", "-rf", "--one-file-system", str(self.directory)])
        return killed

    def memory_bytes(self) -> int | None:
        """Memory the server uses on the machine (its memory cgroup, less reclaimable page cache)."""
        for c in self.cgroups:
            stat = c / "memory.stat"
            usage = c / "memory.usage_in_bytes"
            if stat.is_file() and usage.is_file():
                fields = dict(line.split() for line in stat.read_text().splitlines())
                return int(usage.read_text()) - int(fields.get("total_inactive_file", 0))
            if (c / "memory.current").is_file():
                fields = dict(line.split() for line in (c / "memory.stat").read_text().splitlines())
                return int((c / "memory.current").read_text()) - int(fields.get("inactive_file", 0))
        return None


def remove_cgroup_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    parent = top.parent
    try:
        parent.rmdir()  # the lab's own directory, once its last server is gone
    except OSError:
        pass
