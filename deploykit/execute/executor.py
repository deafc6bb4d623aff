"""The ONLY module that uses pyinfra's run API (State, Config, connect, facts, add_op, run_ops).

pyinfra's API changes between versions; this module absorbs that. Stages follow pyinfra_cli/main.py:
connect, probe (one fact per host), then phases of steps, each phase's hosts in parallel.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import monkey
from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateHostMeta, StateHostResults
from pyinfra.operations import files, server

from deploykit.errors import DeploykitError
from deploykit.execute.probe import HostFacts, ProbeError, ProbeSpec, parse_probe, probe_command
from deploykit.execute.steps import HostOutcome, Shell, Step, Upload
from deploykit.inventory.model import Host

__all__ = ["HostOutcome", "Session", "connect", "disconnect", "probe", "run_steps"]

CONNECT_TIMEOUT_S = 10
CONNECT_RETRIES = 2
MAX_PARALLEL = 50


class _Probe(FactBase):
    """Runs deploykit's probe script and returns its output lines."""

    def command(self, script: str) -> str:  # type: ignore[override]
        return script

    def process(self, output: list[str]) -> list[str]:  # type: ignore[override]
        return output


@dataclass
class Session:
    """Connected hosts and why the others are not."""

    state: State
    by_name: dict[str, Any]
    unreachable: dict[str, str] = field(default_factory=dict)

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
        "ssh_connect_retries": CONNECT_RETRIES,
        "ssh_connect_retry_min_delay": 0.5,
        "ssh_connect_retry_max_delay": 2.0,
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


def connect(hosts: Iterable[Host], *, accept_new_host_keys: bool = False,
            progress: Callable[[str, bool], None] | None = None) -> Session:
    """Connect to every host in parallel (bounded); unreachable ones are recorded, not fatal."""
    _require_gevent()
    hosts = list(hosts)
    capture = _quiet_pyinfra()
    inventory = Inventory(([(h.name, _host_data(h, accept_new_host_keys)) for h in hosts], {}))
    config = Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT_S, PARALLEL=min(MAX_PARALLEL, max(1, len(hosts))),
                    FAIL_PERCENT=None)
    state = State(inventory, config)
    by_name = {h.name: inventory.get_host(h.name) for h in hosts}
    session = Session(state, by_name)

    def _connect(name: str) -> None:
        host = by_name[name]
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as exc:
            session.unreachable[name] = _connect_message(str(exc.args[0]) if exc.args else str(exc))
        except Exception as exc:  # paramiko raises a zoo of errors; each is this host's problem only
            session.unreachable[name] = _connect_message(f"{type(exc).__name__}: {exc}")
        if progress:
            progress(name, name not in session.unreachable)

    gevent.joinall([state.pool.spawn(_connect, h.name) for h in hosts])
    for name, host in by_name.items():
        if host.connected and name not in session.unreachable:
            state.activate_host(host)
    capture.lines.clear()
    return session


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


def probe(session: Session, specs: dict[str, ProbeSpec]) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Facts for each connected host; hosts whose probe failed are returned with the reason."""
    facts: dict[str, HostFacts] = {}
    errors: dict[str, str] = {}

    def _one(name: str) -> None:
        host = session.by_name[name]
        try:
            lines = host.get_fact(_Probe, script=probe_command(specs[name]), _shell_executable="sh")
            if lines is None:
                errors[name] = "the probe command failed"
                return
            facts[name] = parse_probe(specs[name], list(lines))
        except ProbeError as exc:
            errors[name] = str(exc)
        except (PyinfraError, OSError, EOFError) as exc:
            errors[name] = f"probe failed: {exc}"

    names = [n for n in session.connected if n in specs]
    gevent.joinall([session.state.fact_pool.spawn(_one, n) for n in names])
    return facts, errors


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
    capture = _quiet_pyinfra()
    try:
        run_ops(state, no_wait=True)
    except PyinfraError:
        pass  # every host failed; each one's outcome is read below
    for name in steps:
        if name not in names:
            if steps[name]:
                outcomes[name] = HostOutcome(False, "not connected")
            continue
        outcomes[name] = _read_outcome(name, metas[name], capture, on_step)
    return outcomes


def _read_outcome(name: str, metas: list[tuple[str, Any]], capture: _ErrorCapture,
                  on_step: Callable[[str, str], None] | None) -> HostOutcome:
    """How far one host got: its steps stop at the first one that failed or never ran."""
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
        if on_step:
            on_step(name, description)
    return outcome


def _last_error_for(name: str, capture: _ErrorCapture) -> str:
    for line in reversed(capture.lines):
        if name in line:
            return line.split("]", 1)[-1].strip()
    return ""
