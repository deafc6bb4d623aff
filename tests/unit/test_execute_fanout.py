"""The fan-out of the 500-server day (fanout.py, the executor's use of it, the progress lines): bounded connection
starts, connect retries with backoff for passing errors only, the open-files budget, the probe run without
pyinfra's fact machinery, and progress per stage.

Nothing here connects anywhere; greenlets run unpatched (gevent's own sleep and semaphore need no patching), so
this process stays unpatched (see test_execute_adapter)."""

from __future__ import annotations

import errno
import io
import resource
import socket
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import gevent
import pytest
from fake_executor import FakeExecutor
from gevent.lock import BoundedSemaphore
from paramiko import AuthenticationException, BadHostKeyException, SSHException
from paramiko.ssh_exception import NoValidConnectionsError
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.connectors.ssh_util import raise_connect_error
from pyinfra.connectors.util import CommandOutput, OutputLine, make_unix_command
from rich.console import Console

from deploykit.apply.render import PLAIN_EVERY_S, ProgressLine, plain_line_due, progress_text
from deploykit.apply.runner import PhaseResult
from deploykit.apply.workflow import CountingRunner, phase_done_text
from deploykit.execute import executor, fanout
from deploykit.execute.fanout import (
    FDS_BASE,
    OpenFiles,
    TooFewOpenFiles,
    backoff_delays,
    connect_with_retries,
    decide_open_files,
    ensure_open_files,
    is_transient,
    open_files_needed,
    open_files_wanted,
)
from deploykit.execute.probe import ProbeSpec, probe_command
from deploykit.execute.steps import HostOutcome, Shell
from deploykit.inventory.model import DEFAULT_MAX_STARTUPS, Host, SshSettings

INF = resource.RLIM_INFINITY

# --- backoff ------------------------------------------------------------------------------------------------


def test_backoff_doubles_from_half_a_second_three_times() -> None:
    assert backoff_delays(draw=lambda: 0.5) == [0.5, 1.0, 2.0]
    assert fanout.CONNECT_RETRIES == 3


def test_backoff_jitter_is_within_a_quarter_either_way() -> None:
    assert backoff_delays(draw=lambda: 0.0) == [0.375, 0.75, 1.5]
    assert backoff_delays(draw=lambda: 1.0) == [0.625, 1.25, 2.5]
    for delay, nominal in zip(backoff_delays(), (0.5, 1.0, 2.0), strict=True):  # random: within the bounds
        assert 0.75 * nominal <= delay <= 1.25 * nominal


def test_no_retries_no_delays() -> None:
    assert backoff_delays(0) == []


# --- which errors are worth another attempt -------------------------------------------------------------------


def wrapped(exc: BaseException, message: str = "Could not connect") -> ConnectError:
    """What pyinfra's SSH connector raises: its ConnectError, raised while handling paramiko's error."""
    try:
        try:
            raise exc
        except BaseException as inner:
            raise_connect_error(None, message, inner)  # type: ignore[arg-type]
    except ConnectError as outer:
        return outer
    raise AssertionError("raise_connect_error did not raise")


class _Key:
    """Stands for a paramiko key in BadHostKeyException (which only asks for its base64)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def get_base64(self) -> str:
        return self.text


TRANSIENT = [
    ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError("timed out"),
    EOFError(),
    NoValidConnectionsError({("10.0.0.1", 22): ConnectionRefusedError(errno.ECONNREFUSED, "refused")}),
    SSHException("Error reading SSH protocol banner[Errno 104] Connection reset by peer"),
    SSHException("No existing session"),
]
FINAL = [
    AuthenticationException("Authentication failed."),
    BadHostKeyException("web-1", _Key("AAAAgot"), _Key("AAAAexpected")),
    SSHException("StrictPolicy: No host key for 10.0.0.1 found in known_hosts"),
    SSHException("Incompatible ssh peer (no acceptable kex algorithm)"),
    socket.gaierror(-2, "Name or service not known"),
    PyinfraError("Invalid key: /root/.ssh/id_ed25519"),
    PermissionError(errno.EACCES, "Permission denied", "/root/.ssh/id_ed25519"),
    FileNotFoundError(errno.ENOENT, "No such file or directory", "known_hosts"),
    ValueError("anything else"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_passing_network_errors_are_retried_bare_or_as_pyinfra_wraps_them(exc: BaseException) -> None:
    assert is_transient(exc)
    assert is_transient(wrapped(exc))


@pytest.mark.parametrize("exc", FINAL, ids=lambda e: f"{type(e).__name__}:{e}"[:60])
def test_host_key_authentication_and_other_final_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert not is_transient(wrapped(exc))


def test_a_bare_connect_error_without_its_cause_is_not_retried() -> None:
    assert not is_transient(ConnectError("Could not connect (?)"))


def test_final_errors_keep_todays_clear_messages() -> None:
    key = executor._connect_message(executor._raw_error(wrapped(FINAL[2], "SSH error")))
    assert key.startswith("host key not in known_hosts: refusing to connect")
    changed = executor._connect_message(executor._raw_error(
        ConnectError("SSH host key error (Host key for web-1 does not match.)")))
    assert changed.startswith("HOST KEY CHANGED")
    auth = executor._connect_message(executor._raw_error(wrapped(FINAL[0], "Authentication error (username=root)")))
    assert auth.startswith("SSH authentication failed") and "ssh.user and ssh.identity_file" in auth


# --- connect attempts: bounded starts, retries ----------------------------------------------------------------


class Attempts:
    """A host's connect attempts: the errors to fail with, in turn (then success); records how many ran at once."""

    in_flight = 0
    most = 0

    def __init__(self, *errors: Exception, took: float = 0.002) -> None:
        self.errors = list(errors)
        self.took = took
        self.count = 0

    def __call__(self) -> Exception | None:
        Attempts.in_flight += 1
        Attempts.most = max(Attempts.most, Attempts.in_flight)
        self.count += 1
        try:
            gevent.sleep(self.took)
            return self.errors.pop(0) if self.errors else None
        finally:
            Attempts.in_flight -= 1


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    Attempts.in_flight = Attempts.most = 0


def test_no_more_than_max_startups_attempts_run_at_once_and_a_waiting_host_holds_none() -> None:
    starts = BoundedSemaphore(8)
    hosts = [Attempts(ConnectionRefusedError(), TimeoutError()) for _ in range(100)]
    results: list[tuple[Exception | None, int]] = []
    slept: list[float] = []

    def one(attempt: Attempts) -> None:
        def sleep(s: float) -> None:
            slept.append(s)
            assert starts.counter >= 1  # this host's start was given back before it waits
            gevent.sleep(0.001)

        results.append(connect_with_retries(attempt, starts, [0.5, 1.0, 2.0], sleep))

    gevent.joinall([gevent.spawn(one, h) for h in hosts], raise_error=True)
    assert Attempts.most == 8
    assert results == [(None, 3)] * 100
    assert sorted(set(slept)) == [0.5, 1.0]


def test_a_final_error_is_not_retried() -> None:
    attempt = Attempts(AuthenticationException("Authentication failed."))
    error, attempts = connect_with_retries(attempt, BoundedSemaphore(1), [0.5, 1.0, 2.0], _no_sleep)
    assert isinstance(error, AuthenticationException) and attempts == 1 and attempt.count == 1


def test_a_host_that_stays_refused_is_tried_once_and_retried_three_times() -> None:
    slept: list[float] = []
    attempt = Attempts(*[ConnectionRefusedError()] * 10)
    error, attempts = connect_with_retries(attempt, BoundedSemaphore(1), [0.5, 1.0, 2.0], slept.append)
    assert isinstance(error, ConnectionRefusedError) and attempts == 4 and slept == [0.5, 1.0, 2.0]


def _no_sleep(seconds: float) -> None:
    raise AssertionError("slept")


def host(name: str, max_startups: int = DEFAULT_MAX_STARTUPS) -> Host:
    ssh = SshSettings("root", 22, Path("/k"), Path("/kh"), max_startups)
    return Host(name, IPv4Address("192.0.2.1"), "s", "p", None, ("app",), ssh, 1)


def test_the_runs_bound_is_the_inventorys_max_startups() -> None:
    assert executor.max_startups([host("a", 10), host("b", 10)]) == 10
    assert executor.max_startups([]) == DEFAULT_MAX_STARTUPS == 32


def test_pyinfra_does_not_retry_as_well() -> None:
    data = executor._host_data(host("a"), accept_new_host_keys=False)
    assert data["ssh_connect_retries"] == 0
    assert "ssh_connect_retry_min_delay" not in data


# --- open files -----------------------------------------------------------------------------------------------


def test_open_files_need_one_socket_per_host_and_deploykits_own() -> None:
    assert FDS_BASE == 64
    assert open_files_needed(500) == 564
    assert open_files_wanted(500) == 1064


@pytest.mark.parametrize(("soft", "hard", "decision"), [
    (4096, 4096, OpenFiles(564)),  # enough already
    (INF, INF, OpenFiles(564)),
    (1024, 524288, OpenFiles(564, raise_to=1064)),  # the usual Linux default: raised toward twice the need
    (256, INF, OpenFiles(564, raise_to=1064)),
    (256, 800, OpenFiles(564, raise_to=800)),  # the need fits under the hard limit, the headroom does not
    (800, 800, OpenFiles(564)),  # already at the hard limit, which holds the need
])
def test_the_soft_limit_is_raised_when_it_can_be(soft: int, hard: int, decision: OpenFiles) -> None:
    assert decide_open_files(500, soft, hard) == decision


def test_a_hard_limit_below_the_need_is_refused_saying_how_to_raise_it() -> None:
    decision = decide_open_files(500, 256, 512)
    assert decision.raise_to is None
    assert decision.error == (
        "connecting to 500 hosts needs at least 564 open files (one socket per host, 64 for deploykit itself), "
        "but this process may open only 256 (hard limit 512); raise the limit before running deploykit: "
        "`ulimit -n 1064` in the shell (raising the hard limit needs root: `nofile` in "
        "/etc/security/limits.conf), `LimitNOFILE=1064` in a systemd unit, or connect to fewer hosts at once "
        "with --limit")


def test_ensure_open_files_sets_the_soft_limit_and_keeps_the_hard_one() -> None:
    calls: list[tuple[int, tuple[int, int]]] = []
    ensure_open_files(500, getrlimit=lambda _: (1024, 4096), setrlimit=lambda r, v: calls.append((r, v)))
    assert calls == [(resource.RLIMIT_NOFILE, (1064, 4096))]
    calls.clear()
    ensure_open_files(9, getrlimit=lambda _: (1024, 4096), setrlimit=lambda r, v: calls.append((r, v)))
    assert calls == []


def test_ensure_open_files_refuses_before_connecting() -> None:
    with pytest.raises(TooFewOpenFiles, match="needs at least 564 open files"):
        ensure_open_files(500, getrlimit=lambda _: (256, 256), setrlimit=_refuse)


def _refuse(resource_: int, limits: tuple[int, int]) -> None:
    raise ValueError("not allowed to raise the current limit")


def test_a_refused_raise_is_an_error_only_when_the_need_does_not_fit() -> None:
    with pytest.raises(TooFewOpenFiles, match="raising it to 1064 failed: not allowed"):
        ensure_open_files(500, getrlimit=lambda _: (256, 10240), setrlimit=_refuse)
    assert ensure_open_files(500, getrlimit=lambda _: (600, 10240), setrlimit=_refuse).needed == 564


def test_this_process_can_hold_a_500_host_run() -> None:
    """The real limits here, through the real resource module (a CI machine with less would say so clearly)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    decision = decide_open_files(500, soft, hard)
    assert decision.error == "" or "ulimit -n" in decision.error


# --- the probe, through the connector ---------------------------------------------------------------------------


class FakeHost:
    """A connected pyinfra host: run_shell_command answers as the SSH connector does, and records the call."""

    def __init__(self, name: str, answer: Any) -> None:
        self.name = name
        self.connected = True
        self.answer = answer
        self.calls: list[tuple[Any, dict[str, Any]]] = []

    def run_shell_command(self, command: Any, **arguments: Any) -> tuple[bool, CommandOutput]:
        self.calls.append((command, arguments))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def output(stdout: list[str], stderr: list[str] = ()) -> CommandOutput:  # type: ignore[assignment]
    return CommandOutput([OutputLine("stdout", line) for line in stdout]
                         + [OutputLine("stderr", line) for line in stderr])


SPEC = ProbeSpec(files=("/etc/a.conf",), units=("etcd",))


def test_the_probe_runs_the_command_the_fact_machinery_ran_with_a_timeout() -> None:
    h = FakeHost("web-1", (True, output(["@@TAR ", "@@UNITS", "Id=etcd.service", "@@UNITS-END", "@@END"])))
    script = probe_command(SPEC)
    lines, why = executor.run_probe(h, script)
    assert (lines, why) == (["@@TAR ", "@@UNITS", "Id=etcd.service", "@@UNITS-END", "@@END"], "")
    [(command, arguments)] = h.calls
    assert arguments == {"_shell_executable": "sh", "_timeout": executor.PROBE_TIMEOUT_S}
    # what the connector builds from it: `sh -c '<script>'`, exactly as from the fact's plain string before
    assert make_unix_command(command, **arguments_for_command(arguments)).get_raw_value() == \
        make_unix_command(script, _shell_executable="sh").get_raw_value()


def arguments_for_command(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k != "_timeout"}  # the connector pops _timeout first


@pytest.mark.parametrize(("answer", "why"), [
    ((False, output([], ["sh: 1: base64: not found"])), "the probe command failed: sh: 1: base64: not found"),
    ((False, output([])), "the probe command failed"),
    (TimeoutError(), "probe failed: no answer within 120s"),
    (SSHException("Channel closed."), "probe failed: Channel closed."),
    (EOFError(), "probe failed: EOFError"),
])
def test_a_failed_probe_says_why(answer: Any, why: str) -> None:
    assert executor.run_probe(FakeHost("web-1", answer), "echo @@END\n") == ([], why)


class Stages:
    """A FanoutProgress that records what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self, stage: str, total: int) -> None:
        self.events.append(("start", (stage, total)))

    def advance(self, ok: bool) -> None:
        self.events.append(("advance", ok))

    def finish(self) -> None:
        self.events.append(("finish", None))


def test_probe_reads_every_connected_host_and_reports_its_progress() -> None:
    hosts = {
        "web-1": FakeHost("web-1", (True, output(["@@TAR ", "@@END"]))),
        "web-2": FakeHost("web-2", (True, output(["@@TAR "]))),  # cut short
        "web-3": FakeHost("web-3", TimeoutError()),
    }
    session = executor.Session(state=None, by_name=hosts)  # type: ignore[arg-type]
    stages = Stages()
    with executor.reporting(stages):
        facts, errors = executor.probe(session, {name: SPEC for name in hosts})
    assert list(facts) == ["web-1"] and facts["web-1"].files == {"/etc/a.conf": None}
    assert errors == {"web-2": "the probe's output was cut short (no @@END line)",
                      "web-3": "probe failed: no answer within 120s"}
    assert stages.events[0] == ("start", ("probe", 3)) and stages.events[-1] == ("finish", None)
    assert sorted(e[1] for e in stages.events[1:-1]) == [False, False, True]
    executor.probe(session, {name: SPEC for name in hosts})  # outside `reporting`: told to nobody
    assert len(stages.events) == 5


def test_hosts_probed_as_they_connected_are_not_probed_again() -> None:
    hosts = {"web-1": FakeHost("web-1", AssertionError("probed twice")),
             "web-2": FakeHost("web-2", AssertionError("probed twice")),
             "web-3": FakeHost("web-3", (True, output(["@@TAR ", "@@END"])))}
    session = executor.Session(state=None, by_name=hosts)  # type: ignore[arg-type]
    already = executor.parse_probe(SPEC, ["@@TAR ", "@@END"])
    session.probed["web-1"] = already
    session.probe_errors["web-2"] = "probe failed: no answer within 120s"
    stages = Stages()
    with executor.reporting(stages):
        facts, errors = executor.probe(session, {name: SPEC for name in hosts})
    assert facts == {"web-1": already, "web-3": facts["web-3"]} and facts["web-3"].files == {"/etc/a.conf": None}
    assert errors == {"web-2": "probe failed: no answer within 120s"}
    assert [len(h.calls) for h in hosts.values()] == [0, 0, 1]
    assert stages.events[0] == ("start", ("probe", 1))  # only what was left to probe
    session.probed["web-3"] = facts["web-3"]
    with executor.reporting(stages):
        executor.probe(session, {name: SPEC for name in hosts})
    assert len(stages.events) == 3  # nothing left: no empty stage shown


# --- steps reported as they succeed ------------------------------------------------------------------------------


def test_step_events_report_the_steps_of_this_run_only() -> None:
    events = executor._StepEvents()
    seen: list[tuple[str, str]] = []
    web1 = FakeHost("@ssh/web-1", None)
    events.steps = {(web1, "h1"): ("web-1", "write /etc/a.conf")}
    events.on_step = lambda h, d: seen.append((h, d))
    events.operation_host_success(None, web1, "h1")  # type: ignore[arg-type]
    events.operation_host_success(None, web1, "other")  # type: ignore[arg-type]
    assert seen == [("web-1", "write /etc/a.conf")]

    def broken(h: str, d: str) -> None:
        raise RuntimeError("progress bug")

    events.on_step = broken
    events.operation_host_success(None, web1, "h1")  # type: ignore[arg-type]
    assert [str(e) for e in events.errors] == ["progress bug"]  # kept, raised after the phase


# --- progress lines ------------------------------------------------------------------------------------------------


def test_progress_text() -> None:
    assert progress_text("connect", 480, 500, 2) == "connect 480/500, 2 unreachable"
    assert progress_text("probe", 12, 478, 0) == "probe 12/478"
    assert progress_text("phase app", 3, 120, 1) == "phase app 3/120, 1 failed"


def test_plain_lines_come_per_tenth_or_every_few_seconds_never_per_host() -> None:
    assert plain_line_due(50, 500, 0, 0.1)  # a tenth done
    assert not plain_line_due(51, 500, 50, 0.1)
    assert plain_line_due(51, 500, 50, PLAIN_EVERY_S)  # slow: a line every few seconds
    assert not plain_line_due(51, 500, 51, 60.0)  # nothing new: nothing to say
    assert not plain_line_due(500, 500, 450, 60.0)  # the last host: the final line says it
    assert not plain_line_due(1, 3, 0, 0.1) and plain_line_due(1, 3, 0, PLAIN_EVERY_S)  # small stages: time only
    lines = 0
    last = 0
    for done in range(1, 501):  # 500 hosts finishing quickly: 9 lines, not 500
        if plain_line_due(done, 500, last, 0.01):
            lines, last = lines + 1, done
    assert lines == 9


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=120, highlight=False), buffer


def test_without_a_terminal_a_stage_prints_a_few_lines_and_a_final_one() -> None:
    console, buffer = plain_console()
    clock = Clock()
    progress = ProgressLine(console, clock)
    progress.start("connect", 500)
    for i in range(500):
        clock.now += 0.004
        progress.advance(ok=i not in (7, 300))
    progress.finish()
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "connect 50/500, 1 unreachable"
    assert lines[-2] == "connect 450/500, 2 unreachable"
    assert lines[-1] == "connect: 498/500 ok in 2.0s, 2 unreachable"
    assert len(lines) == 10


def test_a_phase_ends_with_its_own_line() -> None:
    console, buffer = plain_console()
    progress = ProgressLine(console, Clock())
    progress.start("phase app", 2)
    progress.advance(True)
    progress.advance(False)
    progress.finish(phase_done_text(PhaseResult("app", 2, 1.5, ["web-2"])))
    assert buffer.getvalue().splitlines() == ["    app: 1/2 ok in 1.5s, FAILED: web-2"]


def test_a_phase_line_names_ten_failed_hosts_at_most() -> None:
    failed = [f"web-{i}" for i in range(1, 26)]
    text = phase_done_text(PhaseResult("app", 500, 3.0, failed)).plain
    assert text == ("    app: 475/500 ok in 3.0s, FAILED: web-1, web-2, web-3, web-4, web-5, web-6, web-7, web-8, "
                    "web-9, web-10 and 15 more (see the recap)")


def test_on_a_terminal_the_line_is_redrawn_in_place_and_erased() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, highlight=False, color_system=None)
    clock = Clock()
    progress = ProgressLine(console, clock)
    progress.start("probe", 3)
    for ok in (True, False, True):
        clock.now += 1
        progress.advance(ok)
    assert progress.live is not None
    progress.finish()
    assert progress.live is None
    text = buffer.getvalue()
    assert "probe 3/3, 1 failed" in text  # drawn while it ran
    assert text.rstrip().endswith("probe: 2/3 ok in 3.0s, 1 failed")


def test_an_empty_stage_prints_nothing() -> None:
    console, buffer = plain_console()
    progress = ProgressLine(console, Clock())
    progress.start("probe", 0)
    progress.finish()
    assert buffer.getvalue() == ""


# --- counting a phase's hosts ------------------------------------------------------------------------------------


class Told:
    def __init__(self) -> None:
        self.oks: list[bool] = []

    def advance(self, ok: bool) -> None:
        self.oks.append(ok)


def test_a_phases_hosts_are_counted_as_they_finish_and_drains_are_not() -> None:
    fake = FakeExecutor().fail("web-2", "second")
    told = Told()
    runner = CountingRunner(fake, told)  # type: ignore[arg-type]
    steps = {"web-1": [Shell("first", "true"), Shell("second", "true")],
             "web-2": [Shell("first", "true"), Shell("second", "true")],
             "web-3": []}
    seen: list[tuple[str, str]] = []
    outcomes = runner.run(steps, lambda h, d: seen.append((h, d)))
    assert told.oks == [True, False, True]  # web-1 as its last step succeeded; then web-2 and web-3 (nothing to do)
    assert ("web-1", "second") in seen and ("web-2", "first") in seen  # the runner's own on_step still called
    assert not outcomes["web-2"].ok
    runner.run({"lb-1": [Shell("drain web-1", "true")]})  # a load balancer's drain: not a host of the phase
    assert len(told.oks) == 3


def test_a_host_without_an_outcome_counts_as_failed() -> None:
    class Lossy:
        def run(self, steps: Any, on_step: Any = None) -> dict[str, HostOutcome]:
            return {}

    told = Told()
    CountingRunner(Lossy(), told).run({"web-1": [Shell("x", "true")]}, lambda h, d: None)  # type: ignore[arg-type]
    assert told.oks == [False]


# --- over SSH, against a paramiko server on the loopback, in a fresh (patched) interpreter ----------------------

LOOPBACK = r'''
from gevent import monkey
monkey.patch_all()
import ipaddress, json, os, socket, subprocess, sys, tempfile
from pathlib import Path
import gevent, paramiko
from deploykit.execute import executor
from deploykit.execute.probe import ProbeSpec
from deploykit.inventory.model import Host, SshSettings

tmp = Path(tempfile.mkdtemp())
user_key, host_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
user_key.write_private_key_file(str(tmp / "id"))
stats = {"starting": 0, "most_starting": 0, "conns": {}, "per_conn": []}

class Server(paramiko.ServerInterface):
    def __init__(self, conn):
        self.conn = conn
    def get_allowed_auths(self, username):
        return "publickey"
    def check_auth_publickey(self, username, key):
        gevent.sleep(0.05)  # a slow authentication keeps each start in flight a while
        if key.get_base64() != user_key.get_base64():
            return paramiko.AUTH_FAILED
        self.conn["authenticated"] = True
        stats["starting"] -= 1
        return paramiko.AUTH_SUCCESSFUL
    def check_channel_request(self, kind, chanid):
        self.conn["channels"].append(kind)
        return paramiko.OPEN_SUCCEEDED
    def check_channel_exec_request(self, channel, command):
        self.conn["execs"] += 1
        gevent.spawn(run, channel, command)
        return True

def run(channel, command):
    done = subprocess.run(["/bin/sh", "-c", command.decode()], capture_output=True)
    channel.sendall(done.stdout)
    channel.send_exit_status(done.returncode)
    channel.close()

def serve(listener, name, drop=False):
    while True:
        sock, _ = listener.accept()
        stats["conns"][name] = stats["conns"].get(name, 0) + 1
        if drop:  # like a server at its MaxStartups: the connection closed before the banner
            sock.close()
        else:
            gevent.spawn(handshake, sock)

def handshake(sock):
    conn = {"channels": [], "execs": 0, "authenticated": False}
    stats["per_conn"].append(conn)
    stats["starting"] += 1
    stats["most_starting"] = max(stats["most_starting"], stats["starting"])
    t = paramiko.Transport(sock)
    t.add_server_key(host_key)
    try:
        t.start_server(server=Server(conn))
    except (EOFError, paramiko.SSHException):  # the client refused our key: it hangs up
        stats["starting"] -= 1

def listen(name, drop=False):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    gevent.spawn(serve, listener, name, drop)
    return listener.getsockname()[1]

good, dropping, unknown_key = listen("good"), listen("dropping", drop=True), listen("unknown_key")
known = tmp / "known_hosts"
known.write_text(f"[127.0.0.1]:{good} {host_key.get_name()} {host_key.get_base64()}\n")
(tmp / "empty").write_text("")
(tmp / "a.conf").write_text("x = 1\n")

def host(name, port, known_hosts=known):
    ssh = SshSettings("root", port, tmp / "id", known_hosts, 2)
    return Host(name, ipaddress.IPv4Address("127.0.0.1"), "s", "p", None, ("app",), ssh, 1)

executor.backoff_delays = lambda: [0.01, 0.02, 0.04]
hosts = [host(f"web-{i}", good) for i in range(1, 7)]
hosts += [host("dropped", dropping), host("stranger", unknown_key, tmp / "empty")]
session = executor.connect(hosts)
spec = ProbeSpec(files=(str(tmp / "a.conf"),))
facts, errors = executor.probe(session, {n: spec for n in session.connected})
print(json.dumps({
    "connected": session.connected, "unreachable": session.unreachable, "errors": errors,
    "files": {n: {p: f.content.decode() for p, f in hf.files.items() if f} for n, hf in facts.items()},
    "most_starting": stats["most_starting"], "conns": stats["conns"],
    "per_conn": [(c["channels"], c["execs"]) for c in stats["per_conn"] if c["authenticated"]],
}))
executor.disconnect(session)
sys.stdout.flush()
os._exit(0)  # the server's transports would keep the interpreter waiting
'''


def test_over_ssh_starts_are_bounded_retries_are_for_passing_errors_and_a_probe_is_one_channel() -> None:
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", LOOPBACK], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["connected"] == [f"web-{i}" for i in range(1, 7)]
    assert result["most_starting"] == 2  # ssh.max_startups: 2, as the server saw it
    assert result["conns"] == {"good": 6, "dropping": 4, "unknown_key": 1}  # refused 4 times; the key: once
    assert result["unreachable"]["dropped"].endswith("(4 attempts)")
    assert result["unreachable"]["stranger"].startswith("host key not in known_hosts: refusing to connect")
    assert result["errors"] == {}
    assert all(files == {next(iter(files)): "x = 1\n"} for files in result["files"].values())
    assert result["per_conn"] == [[["session"], 1]] * 6  # connect + probe: one channel, one command per host


# --- an apply's phases, with the fake executor --------------------------------------------------------------------


def test_each_phase_shows_its_header_its_progress_and_its_final_line() -> None:
    from fake_executor import online_plan

    from deploykit.apply.phases import desired_states
    from deploykit.apply.workflow import apply_with_progress
    from deploykit.inventory import load_inventory
    from deploykit.plan import plan_placement
    from deploykit.secret import Secret

    inv = load_inventory(Path(__file__).resolve().parents[2] / "inventories" / "lab.yml")
    placement = plan_placement(inv)
    states = desired_states(inv, placement, lambda name: Secret(name, "s3cr3t" + name.replace("-", "")))
    fake = FakeExecutor().fail("rbx1-data-1")  # its first step: in the base phase
    console, buffer = plain_console()
    result = apply_with_progress(online_plan(inv, states), fake, placement, console)
    lines = buffer.getvalue().splitlines()
    assert lines[:2] == ["==> phase base: 9 host(s)", "    base: 8/9 ok in 0.0s, FAILED: rbx1-data-1"]
    headers = [line for line in lines if line.startswith("==> phase ")]
    finals = [line for line in lines if line.startswith("    ")]
    assert len(headers) == len(finals) == len(result.phases)  # one final line per phase, nothing per host
    assert len(lines) == 2 * len(result.phases)  # 9 hosts: no intermediate lines without a terminal
