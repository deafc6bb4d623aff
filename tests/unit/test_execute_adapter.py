"""The executor is the one module that touches pyinfra's run API and private run state (issue 8): these tests
pin what it relies on, so a pyinfra upgrade that renames it fails here rather than on a server.

Nothing connects: pyinfra's State and Inventory are built for two hosts that are never connected to. The
gevent checks run in fresh interpreters, so this process is never monkey-patched."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.operation import add_op
from pyinfra.api.state import StateHostMeta, StateHostResults
from pyinfra.operations import files, server

from deploykit.execute import executor
from deploykit.execute.executor import fresh_operations
from deploykit.execute.probe import ProbeSpec, probe_command
from deploykit.execute.steps import HostOutcome, Shell

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventories" / "lab.yml"


@pytest.fixture
def state() -> State:
    inventory = Inventory(([("web-1", {"ssh_hostname": "192.0.2.1"}), ("web-2", {"ssh_hostname": "192.0.2.2"})],
                           {}))
    return State(inventory, Config(PARALLEL=2))


def hosts(state: State) -> list:
    return [state.inventory.get_host("web-1"), state.inventory.get_host("web-2")]


def test_pyinfra_keeps_the_run_state_fresh_operations_resets_where_it_resets_it(state: State) -> None:
    """What one phase leaves behind, in the attributes pyinfra itself fills: a rename upstream breaks this."""
    web1, web2 = hosts(state)
    assert (state.ops, state.op_meta, state.is_executing) == ({web1: {}, web2: {}}, {}, False)
    assert isinstance(state.results[web1], StateHostResults) and isinstance(state.meta[web1], StateHostMeta)
    add_op(state, server.shell, name="first", commands=["true"], host=web1)
    add_op(state, server.shell, name="second", commands=["true"], host=web1)
    add_op(state, server.shell, name="first", commands=["true"], host=web2)
    assert len(state.ops[web1]) == 2 and len(state.ops[web2]) == 1
    assert len(web1.op_hash_order) == 2 and set(web1.op_hash_order) <= set(state.op_meta)
    assert state.meta[web1].ops == 2
    assert len(state.get_op_order()) == 2


def test_fresh_operations_forgets_the_previous_phase(state: State) -> None:
    web1, web2 = hosts(state)
    add_op(state, server.shell, name="phase one", commands=["true"], host=web1)
    add_op(state, server.shell, name="phase one", commands=["true"], host=web2)
    state.is_executing = True  # as run_ops leaves it
    state.results[web1].ops = state.results[web1].success_ops = 1
    old_results, old_meta = state.results[web1], state.meta[web1]

    fresh_operations(state, [web1, web2])

    assert state.is_executing is False
    assert state.op_meta == {}
    assert state.ops == {web1: {}, web2: {}}
    assert web1.op_hash_order == [] and web2.op_hash_order == []
    for host in (web1, web2):
        assert type(state.results[host]) is StateHostResults and type(state.meta[host]) is StateHostMeta
        assert (state.results[host].ops, state.results[host].success_ops, state.results[host].error_ops) == (0, 0, 0)
        assert (state.meta[host].ops, state.meta[host].op_hashes) == (0, set())
    assert state.results[web1] is not old_results and state.meta[web1] is not old_meta
    assert state.get_op_order() == []

    # The next phase's operations are queued (not run at once, as they would be while `is_executing`), alone.
    meta = add_op(state, server.shell, name="phase two", commands=["true"], host=web1)[web1]
    assert not meta.is_complete()
    assert len(web1.op_hash_order) == 1 and state.get_op_order() == web1.op_hash_order == list(state.op_meta)
    assert [m.names for m in state.op_meta.values()] == [{"phase two"}]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_importing_the_executor_patches_nothing() -> None:
    r = run_python("""
        import sys
        import deploykit.execute.executor, gevent.monkey
        sys.exit(gevent.monkey.is_module_patched("socket"))
    """)
    assert r.returncode == 0, r.stderr


def test_connecting_without_the_entry_points_patching_is_refused_and_patches_nothing() -> None:
    r = run_python(f"""
        import dataclasses, ipaddress, sys
        import gevent.monkey
        from deploykit.execute import executor
        from deploykit.inventory import load_inventory

        # TEST-NET-1: even if the guard were gone, nothing real would be connected to
        host = dataclasses.replace(load_inventory({str(LAB)!r}).hosts[0], address=ipaddress.IPv4Address("192.0.2.1"))
        try:
            executor.connect([host])
        except executor.GeventNotPatched as exc:
            print(exc)
            sys.exit(3 if gevent.monkey.is_module_patched("socket") else 0)
        sys.exit(4)
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "connecting without gevent's monkey-patching" in r.stdout
    assert "deploykit" in r.stdout and "entry point" in r.stdout


def test_the_entry_point_patches_before_a_connecting_command_only() -> None:
    r = run_python("""
        import sys
        from gevent import monkey
        from deploykit import entry
        assert entry.needs_gevent(["apply", "inv.yml", "--yes"]) and entry.needs_gevent(["--debug", "plan", "x"])
        assert not entry.needs_gevent(["plan", "inv.yml", "--offline"]) and not entry.needs_gevent(["validate", "x"])
        assert entry.needs_gevent(["secrets", "rotate", "inv.yml", "--yes"])  # it plans and applies
        assert not entry.needs_gevent(["secrets", "list", "inv.yml"]) and not entry.needs_gevent(["lab", "up", "x"])
        assert not monkey.is_module_patched("socket")
        entry.patch_gevent()
        sys.exit(0 if monkey.is_module_patched("socket") else 1)
    """)
    assert r.returncode == 0, r.stderr


def test_this_test_process_is_not_patched() -> None:
    from gevent import monkey

    assert not monkey.is_module_patched("socket")


# --- what the fan-out relies on, with pyinfra's own @fake connector (nothing connects) ---------------------------

FAST = {"fake_delay": 0, "fake_delay_jitter": 0}


def fake_session(*entries: tuple[str, dict]) -> executor.Session:
    session = executor.open_session(list(entries))
    for host in session.by_name.values():
        host.connect()
        session.state.activate_host(host)
    return session


def test_adding_a_phases_operations_runs_nothing_on_the_hosts() -> None:
    """Change detection at add_op ran files.put's facts (3 commands per upload), host after host in one greenlet,
    before the phase: at 500 hosts, thousands of round trips in a row. open_session turns it off."""
    session = fake_session(("@fake/web-1", FAST))
    web1 = session.by_name["@fake/web-1"]
    add_op(session.state, files.put, name="x", src=io.BytesIO(b"a\n"), dest="/etc/x.conf", user="root",
           group="root", mode="644", create_remote_dir=True, host=web1)
    assert web1.connector.executed_commands == []


def test_steps_are_reported_as_each_succeeds_during_the_phase() -> None:
    session = fake_session(("@fake/web-1", FAST), ("@fake/web-2", {**FAST, "fake_responses": {
        "exit 3": {"success": False, "stderr": "boom"}}}))
    web1 = session.by_name["@fake/web-1"]
    seen: list[tuple[str, str, int]] = []
    outcomes = executor.run_steps(session, {
        "@fake/web-1": [Shell("one", "echo 1"), Shell("two", "echo 2")],
        "@fake/web-2": [Shell("one", "echo 1"), Shell("two", "exit 3"), Shell("three", "echo 3")],
    }, lambda h, d: seen.append((h, d, len(web1.connector.executed_commands))))
    assert outcomes["@fake/web-1"] == HostOutcome(True, "", 2)
    assert outcomes["@fake/web-2"] == HostOutcome(False, "two: boom", 1)
    # web-1's first step was reported before its second ran: live, not after the phase
    assert ("@fake/web-1", "one", 1) in seen and ("@fake/web-1", "two", 2) in seen
    assert sorted((h, d) for h, d, _ in seen) == [("@fake/web-1", "one"), ("@fake/web-1", "two"),
                                                   ("@fake/web-2", "one")]


def test_the_probe_is_one_command_through_the_connector() -> None:
    session = fake_session(("@fake/web-1", {**FAST, "fake_responses": {"@@END": ["@@TAR ", "@@END"]}}))
    web1 = session.by_name["@fake/web-1"]
    spec = ProbeSpec(files=("/etc/a.conf",))
    facts, errors = executor.probe(session, {"@fake/web-1": spec})
    assert errors == {} and facts["@fake/web-1"].files == {"/etc/a.conf": None}
    assert web1.connector.executed_commands == [probe_command(spec)]
