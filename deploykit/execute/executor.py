"""The ONLY module that uses pyinfra's run API (State, Config, connect, the connector, add_op, run_ops).

pyinfra's API changes between versions; this module absorbs that. Stages follow pyinfra_cli/main.py:
connect, probe (one command per host), then phases of steps, each phase's hosts in parallel.

Fan-out (the rules are pure functions in fanout.py): connection starts in flight are bounded by the inventory's
`ssh.max_startups`, apart from the MAX_PARALLEL connected hosts that run steps at once; a connect attempt that
failed for a passing reason is tried again here, with backoff (pyinfra's own `ssh_connect_retries` is 0: it
also retried host key refusals, with a flat delay, while holding the start); RLIMIT_NOFILE is checked first.

Round trips per host (read in pyinfra 3.10 and paramiko 4, and counted with a loopback paramiko server that
records every channel request: 20 and 200 hosts, the same for each):
- connect: TCP connect, banner, key exchange, one `publickey` authentication (the key is given; agent and key
  search are off). With `ssh_config_file=/dev/null` pyinfra opens no agent-forwarding session and sets no
  keepalive, and it runs nothing on the host: no `uname`, no sudo or shell detection, no environment.
- probe: one session channel and one `exec` of `sh -c '<script>'` (paramiko waits for each: the open, the exec
  reply, then the output and exit status). Through `host.get_fact` it was already that one command: pyinfra
  added no round trip. It added local work and faults: a timeout or a dropped connection became "the probe
  command failed" (the reason was logged, not returned), there was no timeout, a failing probe failed the host
  in pyinfra's state (the last one raised "No hosts remaining!"), and probes ran on pyinfra's fact pool, 50 at
  once. The probe now runs through the host's connector (`run_shell_command`) directly: the same command on
  the same one channel, with a timeout, the reason kept, and PROBES_IN_FLIGHT at once (a probe is a channel on
  a connection already open: it costs this process no socket and no handshake).
- steps (counted with pyinfra's @fake connector): a Shell step is one command; an Upload (files.put) is the
  SFTP put and 6 to 8 commands (stats of the file and its directory, mkdir and chown when the directory is
  missing, the temporary directory, chown, chmod), in the host's own greenlet. add_op also ran 3 of those stats,
  for change detection, host after host in the main greenlet before the phase started (500 hosts x 20 files:
  30,000 round trips one after the other); open_session turns that off, deploykit's diff having decided.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import monkey
from gevent.lock import BoundedSemaphore
from gevent.pool import Pool
from paramiko import SSHException
from pyinfra.api import Config, Inventory, State, StringCommand
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import BaseStateCallback, StateHostMeta, StateHostResults
from pyinfra.operations import files, server

from deploykit.errors import DeploykitError
from deploykit.execute.fanout import FanoutProgress, backoff_delays, connect_with_retries, ensure_open_files
from deploykit.execute.probe import HostFacts, ProbeError, ProbeSpec, parse_probe, probe_command
from deploykit.execute.steps import HostOutcome, Shell, Step, Upload
from deploykit.inventory.model import DEFAULT_MAX_STARTUPS, Host

__all__ = ["HostOutcome", "Session", "connect", "disconnect", "probe", "reporting", "run_steps"]

CONNECT_TIMEOUT_S = 10  # each of: the TCP connect, the banner, the key exchange, the authentication
MAX_PARALLEL = 50  # connected hosts running a phase's steps at once
PROBES_IN_FLIGHT = 256  # probes at once: one channel each, on connections already open
PROBE_TIMEOUT_S = 120  # the probe script's whole run on one host (stat, base64, dpkg-query, systemctl)

_progress: ContextVar[FanoutProgress | None] = ContextVar("deploykit_fanout_progress", default=None)


@contextmanager
def reporting(progress: FanoutProgress) -> Iterator[None]:
    """Report the connect and probe stages run inside the block to `progress` (the CLI's progress line)."""
    token = _progress.set(progress)
    try:
        yield
    finally:
        _progress.reset(token)


class _StepEvents(BaseStateCallback):
    """Reports each step as it succeeds on its host (pyinfra's operation_host_success), during the phase."""

    def __init__(self) -> None:
        self.steps: dict[tuple[Any, str], tuple[str, str]] = {}  # (pyinfra host, op hash) -> (name, step)
        self.on_step: Callable[[str, str], None] | None = None
        self.errors: list[Exception] = []

    def operation_host_success(self, state: State, host: Any, op_hash: str,  # type: ignore[override]
                               retry_count: int = 0) -> None:
        step = self.steps.get((host, op_hash))
        if step is None or self.on_step is None:
            return
        try:
            self.on_step(*step)
        except Exception as exc:  # a caller's bug must not fail the host's step: raised after the phase
            self.errors.append(exc)


@dataclass
class Session:
    """Connected hosts and why the others are not."""

    state: State
    by_name: dict[str, Any]
    unreachable: dict[str, str] = field(default_factory=dict)
    events: _StepEvents = field(default_factory=_StepEvents)
    probed: dict[str, HostFacts] = field(default_factory=dict)  # probes run as each host connected
    probe_errors: dict[str, str] = field(default_factory=dict)

    @property
    def connected(self) -> list[str]:
        return sorted(n for n, h in self.by_name.items() if h.connected and n not in self.unreachable)

    def run(self, steps: dict[str, list[Step]],
            on_step: Callable[[str, str], None] | None = None) -> dict[str, HostOutcome]:
        """The apply runner's StepRunner: see run_steps."""
        return run_steps(self, steps, on_step)


class GeventNotPatched(DeploykitError):
    """A connecting command started without the entry point's gevent patching (a bug, reported clearly)."""


def _require_gevent() -> None:
    """pyinfra runs hosts as gevent greenlets, and paramiko's transport threads must be greenlets too: that
    only works if the entry point patched threading and sockets before anything imported them
    (`deploykit.entry`). Patching here, after the fact, would be too late and would change the process
    for whoever imported this module, so it is an error instead."""
    if not monkey.is_module_patched("socket"):
        raise GeventNotPatched("internal error: connecting without gevent's monkey-patching; run deploykit "
                               "through its entry point (`deploykit ...` or `python -m deploykit ...`)")
    hub = gevent.get_hub()
    # A host whose operation fails ends its greenlet with PyinfraError: that is reported per host, not printed.
    if PyinfraError not in hub.NOT_ERROR:
        hub.NOT_ERROR = (*hub.NOT_ERROR, PyinfraError)


class _ErrorCapture(logging.Handler):
    """pyinfra reports connection and command errors through logging; keep the last line per host."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _host_data(h: Host, accept_new_host_keys: bool) -> dict[str, Any]:
    return {
        "ssh_hostname": str(h.address),
        "ssh_user": h.ssh.user,
        "ssh_port": h.ssh.port,
        "ssh_key": str(h.ssh.identity_file),
        "ssh_known_hosts_file": str(h.ssh.known_hosts),
        "ssh_strict_host_key_checking": "accept-new" if accept_new_host_keys else "yes",
        "ssh_config_file": "/dev/null",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_connect_retries": 0,  # deploykit retries, see connect
        "ssh_paramiko_connect_kwargs": {"banner_timeout": CONNECT_TIMEOUT_S, "auth_timeout": CONNECT_TIMEOUT_S},
    }


_capture: _ErrorCapture | None = None


def _quiet_pyinfra() -> _ErrorCapture:
    """Route pyinfra's and paramiko's logging to a capture (once); each call starts with no lines."""
    global _capture
    if _capture is not None:
        _capture.lines.clear()
        return _capture
    paramiko_log = logging.getLogger("paramiko")
    paramiko_log.propagate = False
    paramiko_log.setLevel(logging.CRITICAL + 1)
    log = logging.getLogger("pyinfra")
    log.propagate = False
    for h in list(log.handlers):
        log.removeHandler(h)
    capture = _ErrorCapture()
    log.addHandler(capture)
    log.setLevel(logging.WARNING)
    _capture = capture
    return capture


def open_session(entries: list[tuple[str, dict[str, Any]]]) -> Session:
    """A session over pyinfra hosts named and configured as `entries` (deploykit's hosts with their SSH data;
    pyinfra's @fake hosts in the unit tests), none connected yet."""
    inventory = Inventory((entries, {}))
    config = Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT_S, PARALLEL=min(MAX_PARALLEL, max(1, len(entries))),
                    FAIL_PERCENT=None)
    # No change detection when operations are added: it ran each new operation's facts (files.put: three stat
    # commands) then and there, host after host in one greenlet, before the phase began; deploykit's probe and
    # diff already decided what changes. The operations still check at run time, each host in its own greenlet.
    state = State(inventory, config, check_for_changes=False)
    session = Session(state, {name: inventory.get_host(name) for name, _ in entries})
    state.add_callback_handler(session.events)
    return session


def max_startups(hosts: Iterable[Host]) -> int:
    """The inventory's `ssh.max_startups` (every host carries the same one; the smallest, to be safe)."""
    return min((h.ssh.max_startups for h in hosts), default=DEFAULT_MAX_STARTUPS)


def connect(hosts: Iterable[Host], *, accept_new_host_keys: bool = False,
            progress: Callable[[str, bool], None] | None = None,
            probes: dict[str, ProbeSpec] | None = None) -> Session:
    """Connect to every host, `ssh.max_startups` connection starts at a time; unreachable ones are recorded,
    not fatal. Raises TooFewOpenFiles, before connecting anywhere, if the process may not open a socket per host.

    `probes`: each host's probe runs as soon as that host is connected (into session.probed/probe_errors; see
    `probe`), not once every host is: the last connections and the first probes overlap, and one stage of
    hosts done / total is shown instead of two."""
    _require_gevent()
    hosts = list(hosts)
    ensure_open_files(len(hosts))
    capture = _quiet_pyinfra()
    session = open_session([(h.name, _host_data(h, accept_new_host_keys)) for h in hosts])
    state, by_name = session.state, session.by_name
    starts = BoundedSemaphore(max_startups(hosts))
    in_flight = BoundedSemaphore(PROBES_IN_FLIGHT)
    meter = _progress.get()

    def _connect(name: str) -> None:
        host = by_name[name]
        error, attempts = connect_with_retries(lambda: _attempt(host), starts, backoff_delays(), gevent.sleep)
        if error is not None:
            tries = f" ({attempts} attempts)" if attempts > 1 else ""
            session.unreachable[name] = _connect_message(_raw_error(error)) + tries
        ok = error is None
        if progress:
            progress(name, ok)
        if ok and probes is not None and name in probes:
            with in_flight:
                ok = _probe_into(session, name, probes[name])
        if meter:
            meter.advance(ok)

    if meter:
        meter.start("connect" if probes is None else "connect and probe", len(hosts))
    gevent.joinall([gevent.spawn(_connect, h.name) for h in hosts])
    if meter:
        meter.finish()
    for name, host in by_name.items():
        if host.connected and name not in session.unreachable:
            state.activate_host(host)
    capture.lines.clear()
    return session


def _attempt(host: Any) -> Exception | None:
    """One connect attempt; a failed one's connection is closed at once (paramiko leaves it open)."""
    try:
        host.connect(show_errors=False, raise_exceptions=True)
        return None
    except Exception as exc:  # paramiko raises a zoo of errors; each is this host's problem only
        client = getattr(host.connector, "client", None)
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: S110 - closing what failed; nothing to add to the first error
                pass
            host.connector.client = None
        return exc


def _raw_error(exc: Exception) -> str:
    if isinstance(exc, ConnectError):
        return str(exc.args[0]) if exc.args else str(exc)
    return f"{type(exc).__name__}: {exc}"


def _connect_message(raw: str) -> str:
    text = raw.strip().splitlines()[-1] if raw.strip() else "connection failed"
    if "StrictPolicy" in text or "No host key" in text:
        return ("host key not in known_hosts: refusing to connect (verify the host's key and add it to "
                "known_hosts, or pass --accept-new-host-keys to trust it on first use)")
    if "BadHostKey" in text or "does not match" in text:
        return ("HOST KEY CHANGED: the key this host offers differs from known_hosts; refusing to connect "
                "(possible man-in-the-middle, or the server was reinstalled: check, then fix known_hosts)")
    if "Authentication" in text:
        return f"SSH authentication failed ({text}); check ssh.user and ssh.identity_file"
    if "timed out" in text.lower() or "Unable to connect" in text or "Could not connect" in text:
        return f"unreachable: {text}"
    return text


def disconnect(session: Session) -> None:
    for host in session.by_name.values():
        if host.connected:
            try:
                host.disconnect()
            except Exception:  # noqa: S110 - a failing disconnect changes nothing
                pass


def _probe_into(session: Session, name: str, spec: ProbeSpec) -> bool:
    """Probe one connected host into session.probed (or session.probe_errors, with the reason): True if read."""
    try:
        lines, why = run_probe(session.by_name[name], probe_command(spec))
        if why:
            session.probe_errors[name] = why
        else:
            session.probed[name] = parse_probe(spec, lines)
    except ProbeError as exc:
        session.probe_errors[name] = str(exc)
    except Exception as exc:  # paramiko's zoo again: this host's problem only, never a host left out
        session.probe_errors[name] = f"probe failed: {type(exc).__name__}: {exc}"
    return name in session.probed


def probe(session: Session, specs: dict[str, ProbeSpec]) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Facts for each connected host in `specs`; hosts whose probe failed are returned with the reason. Hosts
    probed as they connected (`connect(probes=...)`) are not probed again."""
    meter = _progress.get()

    def _one(name: str) -> None:
        ok = _probe_into(session, name, specs[name])
        if meter:
            meter.advance(ok)

    names = [n for n in session.connected if n in specs and n not in session.probed
             and n not in session.probe_errors]
    if names:
        if meter:
            meter.start("probe", len(names))
        pool = Pool(min(PROBES_IN_FLIGHT, max(1, len(names))))
        gevent.joinall([pool.spawn(_one, n) for n in names])
        if meter:
            meter.finish()
    facts = {n: f for n, f in session.probed.items() if n in specs}
    errors = {n: e for n, e in session.probe_errors.items() if n in specs}
    return facts, errors


def run_probe(host: Any, script: str) -> tuple[list[str], str]:
    """The probe script's output lines on `host`, or why there are none. The command pyinfra's fact machinery
    ran (`sh -c '<script>'`, one exec on one channel), through the connector, without the machinery."""
    try:
        ok, output = host.run_shell_command(StringCommand(script), _shell_executable="sh",
                                            _timeout=PROBE_TIMEOUT_S)
    except TimeoutError:
        return [], f"probe failed: no answer within {PROBE_TIMEOUT_S}s"
    except (PyinfraError, OSError, EOFError, SSHException) as exc:
        return [], f"probe failed: {str(exc) or type(exc).__name__}"
    if not ok:
        detail = " | ".join(line.strip() for line in output.stderr_lines[-3:] if line.strip())
        return [], "the probe command failed" + (f": {detail}" if detail else "")
    return list(output.stdout_lines), ""


def fresh_operations(state: State, hosts: Iterable[Any]) -> None:
    """Forget the operations of the previous phase, keeping the connections.

    The one place that touches pyinfra's private run state (checked against pyinfra 3.x; the unit test
    tests/unit/test_execute_adapter.py fails if a pyinfra upgrade changes these attributes): pyinfra's own
    CLI runs one operation list per process, deploykit runs one per phase over the same connections.
    """
    state.is_executing = False
    state.op_meta = {}
    for host in hosts:
        host.op_hash_order = []
        state.ops[host] = {}
        state.results[host] = StateHostResults()
        state.meta[host] = StateHostMeta()


def run_steps(session: Session, steps: dict[str, list[Step]],
              on_step: Callable[[str, str], None] | None = None) -> dict[str, HostOutcome]:
    """Run each host's steps in order, hosts in parallel; a failing step stops that host only."""
    state = session.state
    outcomes = {name: HostOutcome() for name in steps}
    names = [n for n in steps if n in session.connected and steps[n]]
    if not names:
        return outcomes
    fresh_operations(state, session.by_name.values())
    events = session.events
    events.steps, events.on_step, events.errors = {}, on_step, []
    metas: dict[str, list[tuple[str, Any]]] = {}
    for name in names:
        host = session.by_name[name]
        metas[name] = []
        for step in steps[name]:
            if isinstance(step, Upload):
                result = add_op(state, files.put, name=step.description, src=io.BytesIO(step.content.encode()),
                                dest=step.dest, user=step.owner, group=step.group, mode=step.mode,
                                create_remote_dir=True, host=host)
            else:
                assert isinstance(step, Shell)
                result = add_op(state, server.shell, name=step.description, commands=[step.command], host=host)
            metas[name].append((step.description, result[host]))
            events.steps[(host, host.op_hash_order[-1])] = (name, step.description)
    capture = _quiet_pyinfra()
    try:
        run_ops(state, no_wait=True)
    except PyinfraError:
        pass  # every host failed; each one's outcome is read below
    finally:
        events.steps, events.on_step = {}, None
    for name in steps:
        if name not in names:
            if steps[name]:
                outcomes[name] = HostOutcome(False, "not connected")
            continue
        outcomes[name] = _read_outcome(name, metas[name], capture)
    if events.errors:
        raise events.errors[0]
    return outcomes


def _read_outcome(name: str, metas: list[tuple[str, Any]], capture: _ErrorCapture) -> HostOutcome:
    """How far one host got: its steps stop at the first one that failed or never ran (each step that
    succeeded was reported to on_step as it did, by _StepEvents)."""
    outcome = HostOutcome()
    for description, meta in metas:
        if not meta.is_complete():
            why = _last_error_for(name, capture) or "stopped before all steps ran (connection lost?)"
            return HostOutcome(False, why, outcome.steps_done)
        if not meta.did_succeed(_raise_if_not_complete=False):
            detail = (meta.stderr or meta.stdout or "").strip().splitlines()[-3:]
            return HostOutcome(False, f"{description}: " + (" | ".join(detail) or "failed"), outcome.steps_done,
                               output=meta.stdout or "")
        outcome.steps_done += 1
        outcome.output = meta.stdout or ""
    return outcome


def _last_error_for(name: str, capture: _ErrorCapture) -> str:
    for line in reversed(capture.lines):
        if name in line:
            return line.split("]", 1)[-1].strip()
    return ""
