"""A lab server's processes on this machine, as data: which there are, and waiting until they are gone.

A killed server does not leave the process table with the kill: its supervisor (`sh`) and `systemd-nspawn`
stay there as zombies until their parent reaps them, and their parent is PID 1 (the `lab up` that started
them has exited). systemd as PID 1 reaps at once; the init of the VM this lab is built on reaps only every
1.5-2 s. `lab down` and `lab wipe` therefore wait until every process they killed is reaped (issue 12: a
script's next `lab up` raced `lab down`'s systemd-nspawn processes, still listed a second after it returned).

A process is known by its pid and its start time (clock ticks after boot), so that a pid used again by a
new process is never mistaken for the one that was killed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import LabError

PROC = Path("/proc")
GONE_TIMEOUT = 15.0  # seconds; this machine's PID 1 reaps every 1.5-2 s


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    ppid: int
    state: str  # one letter of /proc/PID/stat: R, S, D, Z (zombie: exited, not reaped yet), ...
    start: int  # clock ticks after boot
    comm: str

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)

    def describe(self) -> str:
        if self.state == "Z":
            return f"{self.pid} {self.comm} (exited, not reaped yet by its parent {self.ppid})"
        return f"{self.pid} {self.comm} (state {self.state})"


def parse_stat(text: str) -> Process:
    """A process from the text of /proc/PID/stat (its name is in parentheses and may hold spaces or ')')."""
    pid, _, rest = text.partition(" (")
    comm, _, fields = rest.rpartition(") ")
    values = fields.split()
    # fields 3 (state), 4 (ppid) and 22 (starttime) of proc(5); `values` starts at field 3
    return Process(pid=int(pid), ppid=int(values[1]), state=values[0], start=int(values[19]), comm=comm)


def read_processes(pids: Iterable[int], proc: Path = PROC) -> list[Process]:
    """The processes of these pids that still exist (zombies included)."""
    found = []
    for pid in pids:
        try:
            found.append(parse_stat((proc / str(pid) / "stat").read_text()))
        except (OSError, ValueError, IndexError):
            continue
    return found


def argv_holds(cmdline: bytes, argument: str) -> bool:
    """Whether a /proc/PID/cmdline (NUL-separated) has `argument` as one whole argument."""
    return argument.encode() in cmdline.split(b"\0")


def processes_with_argument(arguments: Iterable[str], proc: Path = PROC) -> list[Process]:
    """Live processes with one of `arguments` in their argv (a zombie's argv is empty: never found here)."""
    wanted = list(arguments)
    found = []
    for entry in sorted(proc.glob("[0-9]*"), key=lambda e: int(e.name)):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if any(argv_holds(cmdline, a) for a in wanted):
            found += read_processes([int(entry.name)], proc)
    return found


def still_there(watched: Iterable[Process], current: Iterable[Process], me: int | None = None) -> list[Process]:
    """The watched processes that `current` (a listing made now) still has; a pid used again does not count,
    nor a zombie whose parent is another running program than PID 1 and this one (e.g. the test process that
    started the lab through the Python API and runs `lab wipe` as a command): it has exited and holds nothing,
    and only that parent can reap it, whenever it looks."""
    keys = {p.key for p in watched}
    me = os.getpid() if me is None else me
    return [p for p in current if p.key in keys and not (p.state == "Z" and p.ppid not in (1, me))]


def reap_own_children(processes: Iterable[Process]) -> None:
    """Reap the zombies that are this process's own children (the Python API starts servers itself, and
    nothing else here waits for them)."""
    me = os.getpid()
    for p in processes:
        if p.state == "Z" and p.ppid == me:
            try:
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass


def wait_until_gone(
    watched: Sequence[Process],
    lister: Callable[[Sequence[int]], Iterable[Process]],
    *,
    what: str,
    timeout: float = GONE_TIMEOUT,
    reap: Callable[[Sequence[Process]], None] = reap_own_children,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Return once no watched process is left in the process table (`lister(pids)` lists those of the pids
    that exist now); after `timeout` seconds raise a LabError naming what is left."""
    if not watched:
        return
    deadline = clock() + timeout
    pids = sorted({p.pid for p in watched})
    while left := still_there(watched, lister(pids)):
        reap(left)
        if clock() >= deadline:
            shown = ", ".join(p.describe() for p in left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
            raise LabError(f"{what}: {len(left)} process(es) still there {timeout:.0f} s after the kill: {shown}")
        sleep(0.05)
