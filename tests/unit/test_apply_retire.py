"""Retiring a role a host no longer holds (issue 12): which roles are retired from what the probe saw, what a
retirement does on the host, and where it goes in its phase (before the others, one at a time or in a group
of its own), checked with the fake executor."""

from __future__ import annotations

from pathlib import Path

from fake_executor import FakeExecutor, online_plan

from deploykit.apply.phases import desired_states
from deploykit.apply.planner import with_retirements
from deploykit.apply.runner import ApplyResult, apply_plan, one_at_a_time_order
from deploykit.execute.diff import RoleChanges
from deploykit.execute.probe import HostFacts
from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services import SERVICES
from deploykit.services.cache.sentinel import failover_script
from deploykit.services.contract import ConfigContext
from deploykit.services.db.membership import leave_script as db_leave
from deploykit.services.etcd.membership import leave_script as etcd_leave

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "inventories" / "lab.yml"
DATA_UNITS = ("etcd", "patroni", "redis-server", "redis-sentinel", "pdns")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t" + name.replace("-", ""))


def retiring_lab(tmp_path: Path, host: str = "fra1-data-2") -> Path:
    """lab.yml with a fourth data host whose roles were taken away (`roles: []`)."""
    text = LAB.read_text().replace(
        "  rbx1-web-[1:2]:", f"  {host}:    {{address: 10.77.1.22, site: fra1, roles: []}}\n  rbx1-web-[1:2]:", 1)
    path = tmp_path / "lab.yml"
    path.write_text(text)
    return path


def running(*units: str) -> HostFacts:
    return HostFacts(units={u: ("enabled", "active") for u in units})


def test_a_host_without_the_role_but_running_its_units_gets_the_retirement(tmp_path: Path) -> None:
    inv = load_inventory(retiring_lab(tmp_path))
    placement = plan_placement(inv)
    ctx = ConfigContext(inv, placement, secret)
    host = inv.host("fra1-data-2")
    states = desired_states(inv, placement, secret, [host])["fra1-data-2"]
    assert [s.role for s in states] == ["base", "mesh"]
    out = with_retirements(ctx, host, states, running(*DATA_UNITS))
    assert [s.role for s in out] == ["base", "mesh", "etcd", "db", "cache", "dns"]  # phase order
    by_role = {s.role: s for s in out}
    assert [(u.name, u.enabled, u.running) for u in by_role["cache"].services] == [
        ("redis-sentinel", False, False), ("redis-server", False, False)]
    assert by_role["cache"].prepare == failover_script(6379, 26379, "chirp-lab")
    assert by_role["db"].prepare == db_leave("fra1-data-2", f"{host.mesh_address}:8008", 12)
    assert by_role["etcd"].prepare == etcd_leave("fra1-data-2", "http://127.0.0.1:2379", "/var/lib/etcd/chirp-lab-etcd")
    assert by_role["dns"].prepare is None
    assert all(s.retiring and not s.files and not s.packages for s in out[2:])


def test_nothing_is_retired_where_nothing_of_the_role_runs_or_is_enabled(tmp_path: Path) -> None:
    inv = load_inventory(retiring_lab(tmp_path))
    ctx = ConfigContext(inv, plan_placement(inv), secret)
    host = inv.host("fra1-data-2")
    states = desired_states(inv, ctx.placement, secret, [host])["fra1-data-2"]
    assert with_retirements(ctx, host, states, HostFacts()) == states
    stopped = HostFacts(units={u: ("disabled", "inactive") for u in DATA_UNITS})
    assert with_retirements(ctx, host, states, stopped) == states
    # enabled but stopped (e.g. a crashed member) is still retired: it would start again at the next boot
    enabled = HostFacts(units={"patroni": ("enabled", "failed")})
    assert [s.role for s in with_retirements(ctx, host, states, enabled)] == ["base", "mesh", "db"]


def test_a_host_keeps_the_roles_it_holds(tmp_path: Path) -> None:
    """A web host running Redis (say, by hand) keeps its own roles untouched and only loses cache."""
    inv = load_inventory(retiring_lab(tmp_path))
    ctx = ConfigContext(inv, plan_placement(inv), secret)
    host = inv.host("fra1-web-1")
    states = desired_states(inv, ctx.placement, secret, [host])["fra1-web-1"]
    out = with_retirements(ctx, host, states, running("redis-server", "haproxy", "keepalived"))
    assert [s.role for s in out] == [*(s.role for s in states[:2]), "cache", *(s.role for s in states[2:])]
    assert out[2].services[1].name == "redis-server"


def test_every_retire_unit_is_probed_on_hosts_without_the_role(tmp_path: Path) -> None:
    from deploykit.apply.planner import _spec

    inv = load_inventory(retiring_lab(tmp_path))
    host = inv.host("fra1-web-1")
    states = desired_states(inv, plan_placement(inv), secret, [host])["fra1-web-1"]
    units = _spec(states, host, ensure_facts=False).units
    for service in SERVICES:
        if not service.runs_on(host):
            assert set(service.retire_units) <= set(units), service.name


def apply_with_retirement(tmp_path: Path, fake: FakeExecutor | None = None) -> tuple[FakeExecutor, ApplyResult]:
    """Apply lab.yml plus fra1-data-2 (roles: []) whose probe saw every data unit running, with `fake`."""
    inv = load_inventory(retiring_lab(tmp_path))
    placement = plan_placement(inv)
    ctx = ConfigContext(inv, placement, secret)
    states = desired_states(inv, placement, secret)
    facts = {h: HostFacts() for h in states}
    facts["fra1-data-2"] = running(*DATA_UNITS)
    states["fra1-data-2"] = with_retirements(ctx, inv.host("fra1-data-2"), states["fra1-data-2"],
                                             facts["fra1-data-2"])
    fake = fake or FakeExecutor()
    result = apply_plan(online_plan(inv, states, facts=facts), fake, placement, on_phase=fake.on_phase)
    return fake, result


def test_retirements_go_before_every_phase_in_reverse_phase_order(tmp_path: Path) -> None:
    """While the firewall and the clusters still count the host: Patroni hands over while etcd answers it."""
    fake, _ = apply_with_retirement(tmp_path)
    assert fake.phases()[:5] == ["retire dns", "retire cache", "retire db", "retire etcd", "base"]
    for phase in ("retire dns", "retire cache", "retire db", "retire etcd"):
        assert [c.hosts for c in fake.in_phase(phase)] == [["fra1-data-2"]]
    (cache,) = fake.in_phase("retire cache")
    assert cache.descriptions("fra1-data-2") == ["prepare cache", "disable redis-sentinel", "stop redis-sentinel",
                                                 "disable redis-server", "stop redis-server"]
    # ... and the phases proper no longer hold the retiring host
    data = ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
    assert [c.hosts for c in fake.in_phase("etcd")] == [data]
    assert [c.hosts for c in fake.in_phase("cache")] == [[h] for h in data]


def test_a_failed_retirement_stops_the_apply_before_anything_else(tmp_path: Path) -> None:
    fake, result = apply_with_retirement(tmp_path, FakeExecutor().fail("fra1-data-2", "prepare db",
                                                                       phase="retire db"))
    assert fake.phases() == ["retire dns", "retire cache", "retire db"]
    assert result.aborted == "stopped while retiring db on fra1-data-2: nothing else was changed"
    assert result.recap["fra1-data-2"].status == "failed"
    assert result.recap["ams1-data-1"].status == "skipped"


def test_one_at_a_time_order_is_rank_then_natural_name() -> None:
    changes = {n: RoleChanges("cache", rollout_order=r) for n, r in
               (("c-10", 0), ("c-2", 0), ("c-1", 1), ("old-1", -1), ("c-3", 0))}
    assert one_at_a_time_order(changes) == ["old-1", "c-2", "c-3", "c-10", "c-1"]


# --- the handover scripts, run by sh against stub tools ----------------------------------------------------------

def stubbed(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in {"sleep": "exit 0", **tools}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\necho \"{name} $*\" >> {tmp_path}/calls\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def sh(script: str, env: dict[str, str]) -> tuple[int, str]:
    import subprocess

    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_a_leaving_leader_switches_over_stops_and_waits_until_it_is_no_longer_listed(tmp_path: Path) -> None:
    state = tmp_path / "leads"
    state.write_text("yes")
    listed = tmp_path / "listed"
    listed.write_text("2")  # listed twice more after the stop, then gone
    env = stubbed(tmp_path, {
        "curl": f'[ "$(cat {state})" = yes ]',
        "patronictl": (f'case "$*" in *switchover*) echo no > {state} ;; *list*) n=$(cat {listed}); '
                       f'echo $((n - 1)) > {listed}; if [ "$n" -gt 0 ]; then echo \'[{{"Member": "db-2"}}]\'; '
                       "else echo '[]'; fi ;; esac"),
        "systemctl": "exit 0",
    })
    code, out = sh(db_leave("db-2", "10.0.0.2:8008", 12), env)
    assert code == 0, out
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls if not c.startswith(("sleep", "curl"))] == [
        "patronictl", "systemctl", "patronictl", "patronictl", "patronictl"]
    assert "patronictl -c /etc/patroni/config.yml switchover --force" in calls
    assert "systemctl stop patroni" in calls


def test_a_leaving_replica_only_stops(tmp_path: Path) -> None:
    env = stubbed(tmp_path, {"curl": "exit 22", "patronictl": "echo '[]'", "systemctl": "exit 0"})
    code, out = sh(db_leave("db-3", "10.0.0.3:8008", 12), env)
    assert code == 0, out
    assert not any("switchover" in c for c in (tmp_path / "calls").read_text().splitlines())


def test_a_leaving_etcd_member_removes_itself_then_stops_and_sets_its_data_aside(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "member").mkdir(parents=True)
    env = stubbed(tmp_path, {
        "etcdctl": ('case "$*" in *"member list"*) [ -f ' + str(tmp_path) + '/removed ] || '
                    'echo "8e9e05c52164694d, started, etcd-2, http://10.0.0.2:2380, http://10.0.0.2:2379, false"'
                    ' ;; *"member remove"*) touch ' + str(tmp_path) + '/removed ;; esac'),
        "systemctl": "exit 0",
    })
    code, out = sh(etcd_leave("etcd-2", "http://127.0.0.1:2379", str(data)), env)
    assert code == 0, out
    calls = (tmp_path / "calls").read_text().splitlines()
    assert any(c.endswith("member remove 8e9e05c52164694d") for c in calls)
    assert calls.index("systemctl stop etcd") > max(i for i, c in enumerate(calls) if "member remove" in c)
    assert not data.exists() and len(list(tmp_path.glob("data.removed-*"))) == 1


def test_the_plan_says_which_roles_are_retired(tmp_path: Path) -> None:
    from rich.console import Console

    from deploykit.apply.render import plan_data, print_host_plan

    inv = load_inventory(retiring_lab(tmp_path))
    placement = plan_placement(inv)
    ctx = ConfigContext(inv, placement, secret)
    states = desired_states(inv, placement, secret, [inv.host("fra1-data-2")])
    facts = {"fra1-data-2": running("patroni")}
    states["fra1-data-2"] = with_retirements(ctx, inv.host("fra1-data-2"), states["fra1-data-2"],
                                             facts["fra1-data-2"])
    plan = online_plan(inv, states, facts=facts)
    console = Console(record=True, width=200)
    print_host_plan(console, plan.hosts["fra1-data-2"], show_diffs=False)
    text = console.export_text()
    assert "[db] retire: hand over, leave the cluster, stop" in text
    assert "* service patroni: disable, stop" in text
    roles = {r["role"]: r for r in plan_data(plan)["hosts"]["fra1-data-2"]["roles"]}
    assert roles["db"]["retiring"] is True and roles["base"]["retiring"] is False
