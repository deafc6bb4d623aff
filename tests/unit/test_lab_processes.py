"""A lab server's processes as data, and `lab down`/`lab wipe` waiting until the killed ones are reaped."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from deploykit.errors import LabError
from deploykit.lab.processes import (
    Process,
    argv_holds,
    parse_stat,
    processes_with_argument,
    read_processes,
    still_there,
    wait_until_gone,
)

NSPAWN = Process(pid=300, ppid=1, state="S", start=5000, comm="systemd-nspawn")
SUPERVISOR = Process(pid=299, ppid=1, state="S", start=4990, comm="sh")


def stat_line(pid: int, comm: str, state: str, ppid: int, start: int) -> str:
    fields_4_to_21 = [str(ppid), *["0"] * 17]
    return f"{pid} ({comm}) {state} {' '.join(fields_4_to_21)} {start} 3133440 413\n"


def test_parse_stat_of_a_zombie_with_an_awkward_name() -> None:
    assert parse_stat(stat_line(300, "a) (b c", "Z", 1, 2237413)) == Process(300, 1, "Z", 2237413, "a) (b c")
    real = "31550 (cat) R 31542 31542 22922 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 2237413 3133440 413 18446744"
    assert parse_stat(real) == Process(pid=31550, ppid=31542, state="R", start=2237413, comm="cat")


def fake_proc(root: Path, entries: dict[int, tuple[str, bytes]]) -> Path:
    """A /proc with, per pid, its stat line and its cmdline."""
    for pid, (stat, cmdline) in entries.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "stat").write_text(stat)
        (root / str(pid) / "cmdline").write_bytes(cmdline)
    (root / "self").mkdir()
    return root


def test_processes_running_a_server_found_by_its_whole_nspawn_argument(tmp_path: Path) -> None:
    root = "/var/lib/deploykit/lab/l/servers/a-1/root"
    proc = fake_proc(tmp_path, {
        299: (stat_line(299, "sh", "S", 1, 4990), f"sh\0-c\0loop\0systemd-nspawn\0--directory={root}\0".encode()),
        300: (stat_line(300, "systemd-nspawn", "S", 299, 5000), f"systemd-nspawn\0--directory={root}\0".encode()),
        301: (stat_line(301, "systemd-nspawn", "S", 1, 5001), f"systemd-nspawn\0--directory={root}2\0".encode()),
        302: (stat_line(302, "tail", "S", 1, 5002), f"tail\0-f\0{root}/var/log/syslog\0".encode()),
        303: (stat_line(303, "systemd-nspawn", "Z", 1, 5003), b""),  # a zombie's argv is empty
    })  # fmt: skip
    assert [p.pid for p in processes_with_argument([f"--directory={root}"], proc)] == [299, 300]
    assert argv_holds(f"x\0--directory={root}\0".encode(), f"--directory={root}")
    assert not argv_holds(f"x\0--directory={root}2\0".encode(), f"--directory={root}")
    assert read_processes([303, 404], proc) == [Process(303, 1, "Z", 5003, "systemd-nspawn")]


def test_a_pid_used_again_by_another_process_is_not_the_killed_one() -> None:
    reused = Process(pid=300, ppid=77, state="S", start=9999, comm="bash")
    zombie = Process(pid=299, ppid=1, state="Z", start=4990, comm="sh")
    assert still_there([NSPAWN, SUPERVISOR], [reused, zombie]) == [zombie]


def test_a_zombie_another_running_program_must_reap_counts_as_gone() -> None:
    """The test process started the lab through the Python API and runs `lab wipe` as a command: the supervisor
    it started is its child, and only it can reap it (it has exited and holds nothing)."""
    theirs = Process(pid=299, ppid=4242, state="Z", start=4990, comm="sh")
    ours = Process(pid=300, ppid=77, state="Z", start=5000, comm="systemd-nspawn")
    assert still_there([SUPERVISOR, NSPAWN], [theirs, ours], me=77) == [ours]
    running = Process(pid=299, ppid=4242, state="S", start=4990, comm="sh")
    assert still_there([SUPERVISOR], [running], me=77) == [running]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_returns_once_pid_1_has_reaped_them() -> None:
    """The zombies stay listed for a while (this machine's PID 1 reaps every 1.5-2 s), then go."""
    clock = Clock()
    listings = iter([[NSPAWN, SUPERVISOR], [NSPAWN], [NSPAWN], []])
    asked: list[Sequence[int]] = []
    reaped: list[list[int]] = []

    def lister(pids: Sequence[int]) -> list[Process]:
        asked.append(pids)
        return next(listings)

    wait_until_gone([NSPAWN, SUPERVISOR], lister, what="lab l", timeout=5,
                    reap=lambda left: reaped.append([p.pid for p in left]), clock=clock, sleep=clock.sleep)  # fmt: skip
    assert asked == [[299, 300]] * 4
    assert reaped == [[300, 299], [300], [300]]
    assert clock.now == pytest.approx(0.15)


def test_wait_without_anything_killed_asks_nothing() -> None:
    wait_until_gone([], lambda pids: pytest.fail("nothing to list"), what="lab l")


def test_wait_is_bounded_and_names_what_is_left() -> None:
    clock = Clock()
    zombie = Process(pid=300, ppid=1, state="Z", start=5000, comm="systemd-nspawn")
    with pytest.raises(LabError) as exc:
        wait_until_gone([NSPAWN], lambda pids: [zombie], what="lab l", timeout=2, reap=lambda left: None,
                        clock=clock, sleep=clock.sleep)  # fmt: skip
    assert str(exc.value) == (
        "lab l: 1 process(es) still there 2 s after the kill: 300 systemd-nspawn (exited, not reaped yet by its"
        " parent 1)"
    )
    assert clock.now == pytest.approx(2.0, abs=0.06)
