"""The lab as a whole: servers for an inventory's hosts, brought up, broken and removed on this machine.

`Lab` is the Python API the CLI (`deploykit lab ...`) and the end-to-end tests use:

    lab = Lab.for_inventory(load_inventory(Path("inventories/lab.yml")))
    lab.up(); lab.kill(["fra1-web-1"]); lab.start(["fra1-web-1"]); lab.partition("fra1"); lab.heal(); lab.down()
    lab.wipe(["fra1-data-1"])  # the server again as `up` made it: empty disk, new host key, same name and address
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import LabError
from deploykit.inventory.model import Inventory
from deploykit.lab import image, network, repository
from deploykit.lab.firewall import PartitionRules, table_name
from deploykit.lab.keys import (
    ensure_client_key,
    fingerprint,
    known_hosts_line,
    make_host_key,
    replace_known_hosts_lines,
    write_known_hosts,
)
from deploykit.lab.layout import LAB_RANGE, Layout, Server, plan_layout
from deploykit.lab.machine import Machine, network_unit
from deploykit.lab.preflight import check_machine
from deploykit.lab.proc import run
from deploykit.lab.processes import Process, processes_with_argument, read_processes, wait_until_gone
from deploykit.lab.ssh import port_open, ssh_argv
from deploykit.lab.state import LabState, Partition, existing_labs, lab_dir, load_state, remove_state

SSH_TIMEOUT = 180.0


class Progress:
    """What `up`/`start` report while they work; the CLI shows it with rich, the API default is silent."""

    def step(self, message: str) -> None: ...

    def waiting(self, total: int) -> None: ...

    def answered(self, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ServerStatus:
    name: str
    address: str
    site: str
    state: str  # running | stopped | missing
    partitioned: bool
    memory_bytes: int | None


@dataclass(frozen=True, slots=True)
class WipedServer:
    name: str
    address: str
    host_key: str  # the new host key's SHA256 fingerprint


class Lab:
    def __init__(self, state: LabState) -> None:
        self.state = state

    # finding a lab ----------------------------------------------------------------------------------------
    @classmethod
    def for_inventory(cls, inv: Inventory, *, bare: bool | None = None) -> Lab:
        """The lab for an inventory: the running one's state, brought up to date with the inventory.

        `bare`: servers as bare as a provider's fresh Debian, installing every package from the lab's own
        repository (None: as the running lab is, else preinstalled). A lab does not change kind while it
        exists: its servers' disks are overlays of one base."""
        layout = plan_layout(inv)
        previous = load_state(inv.name)
        if previous is not None and bare is not None and previous.bare != bare:
            kind = "bare" if previous.bare else "preinstalled"
            raise LabError(f"lab {inv.name} exists and is {kind}; remove it first (deploykit lab down -i {inv.path})"
                           f" to start it {'bare' if bare else 'preinstalled'}")
        is_bare = previous.bare if previous is not None else bool(bare)
        recipe = image.BARE if is_bare else image.FULL
        state = LabState(
            layout=layout,
            inventory=inv.path,
            identity_file=inv.ssh.identity_file,
            known_hosts=inv.ssh.known_hosts,
            ssh_port=inv.ssh.port,
            domain=inv.domain,
            base=previous.base if previous else image.base_path(recipe=recipe),
            partitions=list(previous.partitions) if previous else [],
            bare=is_bare,
            repo=previous.repo if previous else None,
        )
        lab = cls(state)
        lab._previous = previous
        return lab

    @classmethod
    def running(cls, name: str | None = None) -> Lab:
        """A lab that exists on this machine (the only one, when no name is given)."""
        labs = existing_labs()
        if name is None:
            if not labs:
                raise LabError("no lab exists on this machine: start one with `deploykit lab up INVENTORY`")
            if len(labs) > 1:
                raise LabError(f"several labs exist ({', '.join(labs)}): choose one with -i/--inventory")
            name = labs[0]
        state = load_state(name)
        if state is None:
            raise LabError(f"no lab {name!r} exists on this machine: start it with `deploykit lab up INVENTORY`")
        return cls(state)

    _previous: LabState | None = None

    @property
    def layout(self) -> Layout:
        return self.state.layout

    @property
    def name(self) -> str:
        return self.state.lab

    def machine(self, server: Server) -> Machine:
        binds = ((self.state.repo, image.REPO_MOUNT),) if self.state.repo is not None else ()
        return Machine(self.name, server, self.state.server_dir(server.name), binds)

    def machines(self, names: Iterable[str] | None = None) -> list[Machine]:
        servers = self.layout.servers if names is None else [self.layout.server(n) for n in names]
        return [self.machine(s) for s in servers]

    # up ---------------------------------------------------------------------------------------------------
    def up(self, progress: Progress | None = None) -> None:
        """Create and start whatever of the lab is missing; return when every server answers SSH."""
        progress = progress or Progress()
        check_machine()
        self._refuse_overlap()
        if self._previous is not None:
            self._drop_removed(self._previous, progress)
        if self.state.bare:
            self.state.base = image.ensure_base(progress.step, recipe=image.BARE)
            self.state.repo = repository.ensure_repo(progress.step)
        else:
            self.state.base = image.ensure_base(progress.step)
        progress.step("network segments and rules")
        self.state.save()  # from here on, `lab down` finds everything made
        network.raise_sysctls()
        network.ensure_segments(self.layout)
        self._apply_rules()
        public_key = ensure_client_key(self.state.identity_file)
        machines = self.machines()
        todo = [m for m in machines if not m.is_created()]
        if todo:
            progress.step(f"creating {len(todo)} server(s)")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda m: self._create(m, public_key), todo))
        for m in machines:
            m.mount(self.state.base)
        self._write_hosts_files(machines)
        self._write_known_hosts(machines)
        self._boot(machines, progress)

    def _refuse_overlap(self) -> None:
        mine = {seg.network for seg in self.layout.segments}
        for other in existing_labs():
            state = load_state(other) if other != self.name else None
            if state is not None and (shared := mine & {seg.network for seg in state.layout.segments}):
                nets = ", ".join(str(n) for n in sorted(shared))
                raise LabError(
                    f"lab {other} already uses {nets}: remove it first (deploykit lab down -i {state.inventory})"
                )

    def _create(self, m: Machine, public_key: str) -> None:
        if m.directory.exists():  # a half-created server from an interrupted `up`
            m.remove()
        m.directory.mkdir(parents=True)
        m.mount(self.state.base)
        s = m.server
        m.write_file("etc/hostname", f"{s.name}\n")
        m.write_file("etc/machine-id", f"{uuid.uuid4().hex}\n", 0o444)
        m.write_file("etc/systemd/network/10-deploykit-lab.network", network_unit(s))
        port = self.state.ssh_port
        m.write_file(
            "etc/ssh/sshd_config.d/deploykit-lab-identity.conf", f"HostKey /etc/ssh/ssh_host_ed25519_key\nPort {port}\n"
        )
        m.write_file("root/.ssh/authorized_keys", f"{public_key}\n", 0o600)
        (m.root / "root/.ssh").chmod(0o700)
        make_host_key(m.root / "etc/ssh", s.name)
        m.mark_ready()

    def _boot(self, machines: Sequence[Machine], progress: Progress) -> None:
        to_start = [m for m in machines if not m.is_running()]
        if to_start:
            progress.step(f"booting {len(to_start)} server(s)")
        for m in to_start:
            m.start()
        self.wait_for_ssh([m.server.name for m in machines], progress)

    def hosts_file(self) -> str:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for s in self.layout.servers:
            fqdn = f"{s.name}.{self.state.domain}\t" if self.state.domain else ""
            lines.append(f"{s.address}\t{fqdn}{s.name}")
        return "\n".join(lines) + "\n"

    def _write_hosts_files(self, machines: Sequence[Machine]) -> None:
        text = self.hosts_file()
        for m in machines:
            m.write_file("etc/hosts", text)

    def _known_hosts_line(self, m: Machine) -> str:
        return known_hosts_line(str(m.server.address), m.server.name, self.state.ssh_port, m.host_public_key())

    def _write_known_hosts(self, machines: Sequence[Machine]) -> None:
        write_known_hosts(self.state.known_hosts, [self._known_hosts_line(m) for m in machines])

    def _replace_known_hosts(self, machines: Sequence[Machine]) -> None:
        """Give these servers their current host keys in known_hosts; every other line stays."""
        path = self.state.known_hosts
        if not path.is_file():  # removed by hand: write it whole, as `up` does
            self._write_known_hosts([m for m in self.machines() if m.is_created()])
            return
        current = path.read_text().splitlines()
        write_known_hosts(path, replace_known_hosts_lines(current, [self._known_hosts_line(m) for m in machines]))

    def _drop_removed(self, previous: LabState, progress: Progress) -> None:
        """Remove the servers and segments of an earlier lab that the inventory no longer has."""
        keep = {(s.name, s.address, s.site) for s in self.layout.servers}
        gone = [s for s in previous.layout.servers if (s.name, s.address, s.site) not in keep]
        if gone:
            progress.step(f"removing {len(gone)} server(s) no longer in the inventory")
            for s in gone:
                Machine(self.name, s, previous.server_dir(s.name)).remove()
        wanted = {seg.network for seg in self.layout.segments}
        network.remove_segments([seg for seg in previous.layout.segments if seg.network not in wanted], last_lab=False)
        names = set(self.layout.names)
        self.state.partitions = [p for p in self.state.partitions if set(p.servers) <= names]

    # SSH --------------------------------------------------------------------------------------------------
    def ssh_argv(self, host: str, command: Sequence[str] = (), *, batch: bool = True) -> list[str]:
        s = self.layout.server(host)
        return ssh_argv(
            str(s.address), port=self.state.ssh_port, identity_file=self.state.identity_file,
            known_hosts=self.state.known_hosts, command=command, batch=batch,
        )  # fmt: skip

    def ssh(
        self, host: str, command: str | Sequence[str], *, timeout: float | None = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on a server over SSH (strict host-key checking), capturing its output.

        A command still running after `timeout` seconds is ended and reported with exit code 124 (as `timeout`).
        """
        argv = self.ssh_argv(host, [command] if isinstance(command, str) else list(command))
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return subprocess.CompletedProcess(argv, 124, out, f"ssh {host}: no answer within {timeout} s")

    def wait_for_ssh(
        self, names: Sequence[str], progress: Progress | None = None, timeout: float = SSH_TIMEOUT
    ) -> None:
        progress = progress or Progress()
        progress.waiting(len(names))
        deadline = time.monotonic() + timeout
        pending = list(names)

        def answers(name: str) -> bool:
            s = self.layout.server(name)
            if not port_open(str(s.address), self.state.ssh_port):
                return False
            return self.ssh(name, "true", timeout=10).returncode == 0

        with ThreadPoolExecutor(max_workers=32) as pool:
            while pending:
                results = list(pool.map(answers, pending))
                for name, ok in zip(pending, results, strict=True):
                    if ok:
                        progress.answered(name)
                pending = [n for n, ok in zip(pending, results, strict=True) if not ok]
                for m in self.machines(pending):
                    if (why := m.failure()) is not None:
                        raise LabError(f"{m.server.name} stopped while booting: {why} (log: {m.console_log})")
                if pending and time.monotonic() > deadline:
                    raise LabError(f"no SSH answer after {timeout:.0f} s from: {', '.join(pending)}\n"
                                   + self._why_no_ssh(pending))
                if pending:
                    time.sleep(0.2)

    def _why_no_ssh(self, names: Sequence[str], detailed: int = 3) -> str:
        """For a boot that timed out: per server, whether its SSH port answers, what ssh says, and (for the
        first few) what the server itself says from inside (Machine.diagnose) and its console's last lines."""
        lines = []
        for i, m in enumerate(self.machines(names)):
            s = m.server
            port = "open" if port_open(str(s.address), self.state.ssh_port) else "closed"
            err = self.ssh(s.name, "true", timeout=10).stderr.strip().splitlines()
            lines.append(f"{s.name} ({s.address}:{self.state.ssh_port}, bridge {s.segment.bridge}): port {port}; "
                         f"ssh: {err[-1] if err else 'no error text'}")
            if i < detailed:
                lines += [f"    {line}" for line in m.diagnose().splitlines()]
                try:
                    console = m.console_log.read_text(errors="replace").strip().splitlines()[-5:]
                except OSError:
                    console = []
                lines += [f"    console: {line}" for line in console]
        return "\n".join(lines)

    # breaking things --------------------------------------------------------------------------------------
    def kill(self, names: Sequence[str]) -> list[str]:
        """Abrupt power loss of the named servers; returns those that were running."""
        check_machine(install=False)
        return [m.server.name for m in self.machines(names) if m.kill()]

    def start(self, names: Sequence[str], progress: Progress | None = None) -> None:
        """Boot the named servers again (same disk, identity, address); return when they answer SSH."""
        check_machine(install=False)
        machines = self.machines(names)
        for m in machines:
            if not m.is_created():
                raise LabError(f"{m.server.name} was never created: run `deploykit lab up {self.state.inventory}`")
            m.mount(self.state.base)
        self._boot(machines, progress or Progress())

    def wipe(self, names: Sequence[str], progress: Progress | None = None) -> list[WipedServer]:
        """Replace the named servers' disks, as a provider replaces a broken server: same name and address,
        an empty disk (the lab's base as `up` first made the server: bare or preinstalled, no config, no data),
        a new host key (known_hosts updated); return when they answer SSH. Partitions over them stay."""
        progress = progress or Progress()
        machines = self.machines(list(dict.fromkeys(names)))  # an unknown name: refused before anything changes
        check_machine(install=False)
        for m in machines:
            if not m.is_created():
                raise LabError(f"{m.server.name} was never created: run `deploykit lab up {self.state.inventory}`")
        for needed in (self.state.base, self.state.repo):
            if needed is not None and not needed.is_dir():
                raise LabError(
                    f"{needed} is gone (lab down --purge?): cannot make new disks for "
                    f"{', '.join(m.server.name for m in machines)}; `deploykit lab down` then `up`"
                )
        public_key = ensure_client_key(self.state.identity_file)
        progress.step(f"stopping {len(machines)} server(s) and removing their disks")
        with ThreadPoolExecutor(max_workers=16) as pool:
            killed = [p for batch in pool.map(lambda m: m.remove(), machines) for p in batch]
        self._wait_until_reaped(killed, [m.root for m in machines])
        progress.step(f"new disk and host key for {len(machines)} server(s)")
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda m: self._create(m, public_key), machines))
        self._write_hosts_files(machines)
        self._replace_known_hosts(machines)
        self._boot(machines, progress)
        return [WipedServer(m.server.name, str(m.server.address), fingerprint(m.host_public_key())) for m in machines]

    def _wait_until_reaped(self, killed: Sequence[Process], roots: Sequence[Path]) -> None:
        """Return once no process of these servers is left on the machine: none killed is still in the process
        table (zombies waiting for PID 1 included) and no process runs a server's nspawn outside its cgroup
        (e.g. a supervisor's restart caught between its fork and entering the cgroup: killed here)."""
        strays = processes_with_argument(f"--directory={root}" for root in roots)
        for p in strays:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until_gone([*killed, *strays], read_processes, what=f"lab {self.name}")

    def partition(self, target: str, *, keep_controller: bool = True) -> tuple[str, ...]:
        """Cut a server, site or provider off the rest of the lab (it keeps talking within itself)."""
        check_machine(install=False)
        servers = tuple(s.name for s in self.layout.select(target))
        self.state.partitions = [p for p in self.state.partitions if p.target != target]
        self.state.partitions.append(Partition(target=target, servers=servers, keep_controller=keep_controller))
        self.state.save()
        self._apply_rules()
        return servers

    def heal(self, targets: Sequence[str] = ()) -> list[str]:
        """Lift the partitions of the given targets (a partition over any of their servers), or all."""
        check_machine(install=False)
        chosen = {s.name for t in targets for s in self.layout.select(t)}
        healed = [p for p in self.state.partitions if not targets or p.target in targets or chosen & set(p.servers)]
        self.state.partitions = [p for p in self.state.partitions if p not in healed]
        self.state.save()
        self._apply_rules()
        return [p.target for p in healed]

    def _apply_rules(self) -> None:
        rules = []
        for p in self.state.partitions:
            servers = [self.layout.server(n) for n in p.servers]
            allowed = {str(s.address) for s in servers}
            if p.keep_controller:
                allowed |= {str(s.segment.gateway) for s in servers}
            rules.append(PartitionRules(ports=tuple(s.veth for s in servers), allowed=tuple(sorted(allowed))))
        network.apply_rules(self.name, rules)

    # looking ----------------------------------------------------------------------------------------------
    def status(self) -> list[ServerStatus]:
        cut = {n for p in self.state.partitions for n in p.servers}
        rows = []
        for m in self.machines():
            running = m.is_running()
            state = "running" if running else ("stopped" if m.is_created() else "missing")
            rows.append(
                ServerStatus(
                    name=m.server.name,
                    address=str(m.server.address),
                    site=m.server.site,
                    state=state,
                    partitioned=m.server.name in cut,
                    memory_bytes=m.memory_bytes() if running else None,
                )  # fmt: skip
            )
        return rows

    # down -------------------------------------------------------------------------------------------------
    def down(self, *, purge: bool = False, progress: Progress | None = None) -> None:
        """Remove every server, mount, cgroup, bridge, route and rule of the lab (and the base, with purge)."""
        progress = progress or Progress()
        check_machine(install=False)
        progress.step(f"removing {len(self.layout.servers)} server(s)")
        # Another lab on this machine may use the same server or segment names (and so the same veth and bridge
        # names): those links are its own, never removed here (e.g. a `down` after an `up` refused for overlap).
        others = [st for n in existing_labs() if n != self.name and (st := load_state(n)) is not None]
        foreign_servers = {s.name for st in others for s in st.layout.servers}
        foreign_bridges = {seg.bridge for st in others for seg in st.layout.segments}
        machines = self.machines()
        machines += [  # servers no longer in the layout
            Machine(self.name, _orphan_server(d.name, self.layout), d)
            for d in sorted((lab_dir(self.name) / "servers").glob("*"))
            if d.name not in self.layout.names
        ]
        with ThreadPoolExecutor(max_workers=16) as pool:
            killed = [
                p for batch in pool.map(lambda m: m.remove(veth=m.server.name not in foreign_servers), machines)
                for p in batch
            ]  # fmt: skip
        progress.step("removing network segments and rules")
        network.remove_rules(self.name)
        last = set(existing_labs()) <= {self.name}
        network.remove_segments([s for s in self.layout.segments if s.bridge not in foreign_bridges], last_lab=last)
        if last:
            network.restore_sysctls()
        # Until reaped, the killed supervisors and nspawns are still listed (by ps, pgrep): a script's next
        # `lab up` would race them. The state file stays until then, so a `down` that fails here can be rerun.
        self._wait_until_reaped(killed, [m.root for m in machines])
        run_rm = lab_dir(self.name) / "servers"
        if run_rm.is_dir():
            run_rm.rmdir()
        remove_state(self.name)
        if purge:
            for path in [*image.purge(), *repository.purge()]:
                progress.step(f"removed cached base {path}")

    def remains(self) -> list[str]:
        """What of this lab is still on the machine (empty after a complete `down`)."""
        found = [f"bridge {seg.bridge}" for seg in self.layout.segments if network.bridge_exists(seg.bridge)]
        here = str(lab_dir(self.name))
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4].startswith(here):
                found.append(f"mount {line.split()[4]}")
        found += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"*/deploykit-lab-{self.name}")]
        found += [f"cgroup {c}" for c in Path("/sys/fs/cgroup").glob(f"deploykit-lab-{self.name}")]
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if here.encode() in cmdline:
                found.append(f"process {proc.name}: {cmdline.replace(bytes(1), b' ')[:80].decode(errors='replace')}")
        tables = run(["nft", "list", "tables"], check=False).stdout
        found += [f"nft {line.strip()}" for line in tables.splitlines() if line.endswith(f" {table_name(self.name)}")]
        if lab_dir(self.name).exists():
            found.append(f"directory {lab_dir(self.name)}")
        if not existing_labs():
            if run(["ip", "route", "show", "type", "unreachable", str(LAB_RANGE)], check=False).stdout.strip():
                found.append(f"route unreachable {LAB_RANGE}")
            if network.SAVED_SYSCTLS.exists():
                found.append(f"saved sysctls {network.SAVED_SYSCTLS} (not restored)")
        return found


def _orphan_server(name: str, layout: Layout) -> Server:
    seg = layout.segments[0] if layout.segments else None
    if seg is None:
        from ipaddress import IPv4Network

        from deploykit.lab.layout import Segment

        seg = Segment(site="?", provider="?", network=IPv4Network("10.77.255.0/24"))
    return Server(name=name, address=LAB_RANGE.network_address, site=seg.site, provider=seg.provider, segment=seg)
