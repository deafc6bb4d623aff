"""The `deploykit` command line: exit codes, one-line errors (never a traceback), JSON output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from deploykit import __version__
from deploykit import cli as cli_module
from deploykit.cli import cli, main
from deploykit.errors import ExitCode

F = "inventory.yml"

NOT_SURVIVING_HOSTS = {
    "fra1-web-[1:2]": "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}",
    "rbx1-web-[1:2]": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker]}",
    "ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, roles: [lb, app, worker]}",
    "fra1-data-[1:2]": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}",
    "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache]}",
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `deploykit ARGS` through the real entry point."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    code = exc.value.code
    assert isinstance(code, int)
    return code, captured.out, captured.err


def flat(text: str) -> str:
    """Text with rich's line wrapping undone (any run of whitespace becomes one space)."""
    return " ".join(text.split())


@pytest.fixture
def lab(repo_root: Path) -> str:
    return str(repo_root / "inventories" / "lab.yml")


@pytest.fixture
def written(write_inventory: Callable[..., Path]) -> Callable[[str], str]:
    def write(text: str) -> str:
        write_inventory(text)
        return F

    return write


# --- validate -------------------------------------------------------------------------------------------------


def test_validate_lab(capsys, lab: str) -> None:
    code, out, err = run(capsys, "validate", lab)
    assert code == 0
    assert flat(out) == f"{lab}: valid (9 hosts in 3 sites at 3 providers)"
    assert err == ""


def test_validate_invalid_lists_every_error_and_exits_1(capsys, written, make_inventory, base_hosts) -> None:
    base_hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra2, roles: [lb, app, dbb]}"
    code, out, err = run(capsys, "validate", written(make_inventory(hosts=base_hosts)))
    assert code == 1
    lines = err.splitlines()
    assert lines == [
        f"{F}:10: hosts/fra1-web-[1:2]/roles/2: unknown role 'dbb' (did you mean 'db'?)",
        f"{F}:10: hosts/fra1-web-[1:2]/site: unknown site 'fra2' (did you mean 'fra1'?); sites are defined under "
        "'sites:'",
        f"{F}: 2 error(s)",
    ]
    assert "Traceback" not in out + err


def test_validate_warnings_keep_exit_0(capsys, written, make_inventory, base_sites) -> None:
    text = make_inventory(sites={**base_sites, "lon1": "{provider: ovh}"})
    code, out, err = run(capsys, "validate", written(text))
    assert code == 0
    assert out.splitlines() == [
        f"{F}:9: sites/lon1: warning: site 'lon1' has no hosts",
        f"{F}: valid (9 hosts in 4 sites at 3 providers)",
    ]
    assert err == ""


def test_validate_missing_file(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "validate", "nope.yml")
    assert code == 1
    assert err.splitlines() == [
        "nope.yml: no such file; check the path (example: inventories/example.yml)",
        "nope.yml: 1 error(s)",
    ]


def test_validate_json_valid(capsys, lab: str) -> None:
    code, out, _ = run(capsys, "validate", "--json", lab)
    assert code == 0
    assert json.loads(out) == {"inventory": lab, "valid": True, "problems": []}


def test_validate_json_invalid(capsys, written, make_inventory, base_sites) -> None:
    base_sites["ams1"] = "{provider: leaseweb, vip: 10.1.0.100}"
    code, out, err = run(capsys, "validate", "--json", written(make_inventory(sites=base_sites)))
    assert code == 1
    data = json.loads(out)
    assert data["valid"] is False
    assert data["inventory"] == F
    assert data["problems"] == [{"file": F, "line": 8, "path": "sites/ams1/vip", "severity": "error",
                                 "message": "VIP 10.1.0.100 is also the VIP of site 'fra1'"}]
    assert err == ""


def test_validate_json_reports_warnings(capsys, written, make_inventory, base_sites) -> None:
    text = make_inventory(sites={**base_sites, "x1": "{provider: p}"})
    code, out, _ = run(capsys, "validate", "--json", written(text))
    assert code == 0
    data = json.loads(out)
    assert data["valid"] is True
    assert [(p["severity"], p["path"]) for p in data["problems"]] == [("warning", "sites/x1")]


def test_validate_json_of_binary_file(capsys, write_inventory) -> None:
    write_inventory(b"\x00\x01\x02")
    code, out, _ = run(capsys, "validate", "--json", F)
    assert code == 1
    assert json.loads(out)["problems"][0]["message"] == "is a binary file, not YAML text; did you pass the wrong file?"


# --- plan --offline -------------------------------------------------------------------------------------------


def test_plan_offline_lab_exits_0(capsys, lab: str) -> None:
    code, out, err = run(capsys, "plan", "--offline", lab)
    assert code == 0
    text = flat(out)
    assert text.startswith(f"deploykit plan (offline): chirp-lab from {lab}")
    assert "Survives the loss of any one provider or site (6 scenarios checked)." in text
    assert "DOWN" not in text
    assert err == ""


def test_plan_offline_not_surviving_exits_3_and_names_the_scenario(capsys, written, make_inventory) -> None:
    code, out, err = run(capsys, "plan", "--offline", written(make_inventory(hosts=NOT_SURVIVING_HOSTS)))
    assert code == 3  # distinct from 1 (invalid input): CI tells "not resilient" from "broken" (issue 8)
    text = flat(out)
    assert "Does NOT survive: losing provider hetzner; losing site fra1." in text
    assert ("DOWN etcd: losing provider hetzner loses etcd quorum: 1 of 3 members left, a majority needs 2"
            in text)
    assert "fix: spread etcd over more failure domains" in text
    assert "Traceback" not in out + err


def test_plan_offline_degraded_still_exits_0(capsys, written, make_inventory) -> None:
    code, out, _ = run(capsys, "plan", "--offline",
                       written(make_inventory(services="services:\n  app: {min_capacity: 0.75}")))
    assert code == 0
    text = flat(out)
    # each line names its loss (issue 8): the three providers each leave 4 of 6
    for provider in ("hetzner", "leaseweb", "ovh"):
        assert (f"DEGRADED app (losing provider {provider}): 4 of 6 app hosts left (67%), below min_capacity 75%"
                in text)
    assert "Survives the loss of any one provider or site (6 scenarios checked)." in text


def test_plan_offline_shows_warnings(capsys, written, make_inventory, base_sites) -> None:
    code, out, _ = run(capsys, "plan", "--offline",
                       written(make_inventory(sites={**base_sites, "lon1": "{provider: ovh}"})))
    assert code == 0
    assert f"{F}:9: sites/lon1: warning: site 'lon1' has no hosts" in out.splitlines()


def test_plan_offline_invalid_inventory_exits_1_without_traceback(capsys, written, make_inventory, base_hosts) -> None:
    base_hosts["fra1-data-1"] = "{address: 10.1.0.300, site: fra1, roles: [db, etcd, cache]}"
    base_hosts["rbx1-data-1"] = "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache], prot: 1}"
    code, out, err = run(capsys, "plan", "--offline", written(make_inventory(hosts=base_hosts)))
    assert code == 1
    lines = err.splitlines()
    assert lines[0] == (f"{F}:11: hosts/fra1-data-1/address: '10.1.0.300' is not a valid IPv4 address; write four "
                        "numbers 0-255 like 10.10.0.21")
    assert lines[1] == (f"{F}:13: hosts/rbx1-data-1/prot: unknown key 'prot' (expected one of: address, interface, "
                        "mesh_address, provider, rack, roles, site, ssh)")
    assert lines[-1] == f"{len(lines) - 1} error(s); nothing was changed on any host"
    assert "Traceback" not in out + err
    assert out == ""


def test_plan_offline_empty_file(capsys, written) -> None:
    code, _, err = run(capsys, "plan", "--offline", written(""))
    assert code == 1
    assert err.splitlines() == [
        f"{F}: the inventory is empty; start from inventories/example.yml",
        "1 error(s); nothing was changed on any host",
    ]


def test_plan_offline_json(capsys, lab: str) -> None:
    code, out, _ = run(capsys, "plan", "--offline", "--json", lab)
    assert code == 0
    data = json.loads(out)
    assert data["format"] == "deploykit.plan/v1"
    assert data["name"] == "chirp-lab"
    assert data["resilience"]["survives"] is True
    assert [(s["level"], s["unit"], s["status"]) for s in data["resilience"]["scenarios"]] == [
        ("provider", "hetzner", "up"), ("provider", "leaseweb", "up"), ("provider", "ovh", "up"),
        ("site", "ams1", "up"), ("site", "fra1", "up"), ("site", "rbx1", "up")]
    assert data["placement"]["etcd"]["initial_cluster"] == (
        "ams1-data-1=http://10.77.226.122:2380,fra1-data-1=http://10.77.167.178:2380,"
        "rbx1-data-1=http://10.77.236.233:2380")  # mesh addresses


def test_plan_offline_json_not_surviving(capsys, written, make_inventory) -> None:
    code, out, _ = run(capsys, "plan", "--offline", "--json", written(make_inventory(hosts=NOT_SURVIVING_HOSTS)))
    assert code == 3
    data = json.loads(out)
    assert data["resilience"]["survives"] is False
    hetzner = next(s for s in data["resilience"]["scenarios"] if s["unit"] == "hetzner")
    assert hetzner["status"] == "down"
    assert hetzner["tiers"]["etcd"]["reason"] == (
        "losing provider hetzner loses etcd quorum: 1 of 3 members left, a majority needs 2")


def test_online_plan_of_an_invalid_inventory_fails_before_connecting(capsys, written) -> None:
    code, out, err = run(capsys, "plan", written("version: 2\n"))
    assert code == 1
    assert err.splitlines() == [
        f"{F}:1: version: unsupported version 2; this deploykit reads inventory version 1",
        "1 error(s); nothing was changed on any host",
    ]
    assert out == ""


def test_example_inventory_plans_clean(capsys, repo_root: Path) -> None:
    path = repo_root / "inventories" / "example.yml"
    if not path.exists():
        pytest.skip("inventories/example.yml is not written yet")
    code, out, err = run(capsys, "validate", str(path))
    assert (code, err) == (0, "")
    code, out, err = run(capsys, "plan", "--offline", "--json", str(path))
    assert code == 0
    data = json.loads(out)
    assert data["resilience"]["survives"] is True
    assert all(s["status"] != "down" for s in data["resilience"]["scenarios"])


# --- the boundary ---------------------------------------------------------------------------------------------


def test_version(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"deploykit, version {__version__}"


def test_help_lists_the_commands(capsys) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("validate", "plan", "lab"):
        assert name in out


def test_unknown_command(capsys) -> None:
    code, _, err = run(capsys, "deploy-everything")
    assert code == 64  # a usage error, distinct from invalid input
    assert "No such command 'deploy-everything'" in err


def test_missing_argument(capsys) -> None:
    code, _, err = run(capsys, "validate")
    assert code == 64
    assert "Missing argument 'INVENTORY'" in err


def test_debug_reraises_inventory_errors(capsys, written) -> None:
    from deploykit.errors import InventoryError

    with pytest.raises(InventoryError):
        main(["--debug", "plan", "--offline", written("")])


def test_unexpected_error_is_one_line_and_logged(capsys, lab: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import deploykit.plan

    def boom(inv: object) -> None:
        raise RuntimeError("boom")

    log = tmp_path / "debug.log"
    monkeypatch.setattr(deploykit.plan, "plan_placement", boom)
    monkeypatch.setattr(cli_module, "DEBUG_LOG", log)
    code, out, err = run(capsys, "plan", "--offline", lab)
    assert code == 1
    assert err.splitlines() == [f"internal error: RuntimeError: boom (details in {log}; rerun with --debug)"]
    assert "Traceback" not in err
    assert "Traceback (most recent call last)" in log.read_text()
    assert "RuntimeError: boom" in log.read_text()


def test_unexpected_error_with_debug_reraises(lab: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import deploykit.plan

    def boom(inv: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(deploykit.plan, "plan_placement", boom)
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "plan", "--offline", lab])


# --- the click group directly ---------------------------------------------------------------------------------


def test_cli_runner_validate(lab: str) -> None:
    result = CliRunner().invoke(cli, ["validate", lab])
    assert result.exit_code == 0, result.output
    assert "valid (9 hosts in 3 sites at 3 providers)" in result.output


def test_cli_runner_plan_offline_json(lab: str) -> None:
    result = CliRunner().invoke(cli, ["plan", "--offline", "--json", lab])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resilience"]["survives"] is True


def test_cli_runner_plan_not_surviving(written, make_inventory) -> None:
    path = written(make_inventory(hosts=NOT_SURVIVING_HOSTS))
    result = CliRunner().invoke(cli, ["plan", "--offline", path])
    assert result.exit_code == 3
    assert "Does NOT survive" in flat(result.stdout)


# --- issue 8: the holes a new user found trying the CLI offline, each a wrong answer before the fix ---------

def many_hosts(n_app: int) -> dict[str, str]:
    """Three sites, a data host each, and `n_app` app hosts per site (addresses within one /24)."""
    hosts = {}
    for site, octet in (("fra1", 1), ("rbx1", 2), ("ams1", 3)):
        hosts[f"{site}-web-[1:{n_app}]"] = f"{{address: 10.{octet}.0.11, site: {site}, roles: [lb, app, worker]}}"
        hosts[f"{site}-data-1"] = f"{{address: 10.{octet}.1.21, site: {site}, roles: [db, etcd, cache]}}"
    return hosts


def test_exit_codes_are_distinct_and_stable() -> None:
    codes = {c.name: c.value for c in ExitCode}
    assert codes == {"OK": 0, "ERROR": 1, "CHANGES": 2, "NOT_RESILIENT": 3, "USAGE": 64, "INTERRUPTED": 130}


def test_an_unknown_option_is_a_usage_error_not_invalid_input(capsys, written, make_inventory) -> None:
    code, _, err = run(capsys, "plan", "--offline", "--no-such-option", written(make_inventory()))
    assert code == ExitCode.USAGE
    assert "No such option" in err


def test_offline_plan_out_saves_the_plan(capsys, written, make_inventory, tmp_path: Path) -> None:
    """Before: `plan --offline --out FILE` wrote nothing and said nothing."""
    target = tmp_path / "offline.json"
    code, out, err = run(capsys, "plan", "--offline", "--out", str(target), written(make_inventory()))
    assert code == 0
    data = json.loads(target.read_text())
    assert data["resilience"]["survives"] is True and data["hosts"] == 9
    assert f"saved to {target}" in flat(err)
    assert "Survives the loss" in flat(out)  # the people's plan is still printed


def test_offline_plan_out_is_refused_by_apply(capsys, written, make_inventory, tmp_path: Path) -> None:
    target = tmp_path / "offline.json"
    run(capsys, "plan", "--offline", "--out", str(target), written(make_inventory()))
    code, _, err = run(capsys, "apply", str(target))
    assert code == ExitCode.ERROR
    assert "not a deploykit saved plan" in err


def test_offline_plan_out_to_an_unwritable_place_is_a_clear_error(capsys, written, make_inventory,
                                                                  tmp_path: Path) -> None:
    code, _, err = run(capsys, "plan", "--offline", "--out", str(tmp_path / "no" / "such" / "dir.json"),
                       written(make_inventory()))
    assert code == ExitCode.ERROR
    assert "cannot save the offline plan" in err and "Traceback" not in err


def test_unknown_limit_is_an_error_listing_the_nearest_names_even_offline(capsys, written, make_inventory) -> None:
    """Before: `--limit nosuchhost` was accepted and did nothing."""
    code, out, err = run(capsys, "plan", "--offline", "--limit", "fra1-web-9", written(make_inventory()))
    assert code == ExitCode.ERROR
    assert "--limit fra1-web-9: no host, role, site or provider by that name" in err
    assert "nearest: fra1-web-2, fra1-web-1" in err
    assert out == ""


def test_a_known_limit_with_offline_is_refused_as_usage(capsys, written, make_inventory) -> None:
    code, _, err = run(capsys, "plan", "--offline", "--limit", "fra1", written(make_inventory()))
    assert code == ExitCode.USAGE
    assert "--limit applies to the online plan" in err


def test_failures_only_needs_offline(capsys, written, make_inventory) -> None:
    code, _, err = run(capsys, "plan", "--failures-only", written(make_inventory()))
    assert code == ExitCode.USAGE
    assert "--failures-only applies to the offline plan" in err


def test_a_host_failure_domain_over_many_hosts_shows_only_what_is_not_up(capsys, written, make_inventory) -> None:
    """Before: one row per host (300+ rows for 300 hosts) and no way to see only what fails."""
    text = make_inventory(hosts=many_hosts(20), failure_domains="[provider, host]")
    code, out, _ = run(capsys, "plan", "--offline", written(text))
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith(("│ host ", "│ provider "))]
    assert rows == []  # 3 provider and 63 host losses, every tier up: not listed one by one
    assert "66 of 66 losses leave every tier up (not listed: more than 40 rows)" in flat(out)
    assert "Survives the loss of any one provider or host (66 scenarios checked)." in flat(out)
    # With min_capacity 0.99 every loss of an app host degrades the app tier: those rows are listed.
    text = make_inventory(hosts=many_hosts(20), failure_domains="[provider, host]",
                          services="services:\n  app: {min_capacity: 0.99}")
    code, out, _ = run(capsys, "plan", "--offline", written(text))
    rows = [line for line in out.splitlines() if line.startswith(("│ host ", "│ provider "))]
    assert len(rows) == 3 + 60  # every loss of app capacity; the 3 data hosts' losses leave every tier up
    assert "3 of 66 losses leave every tier up" in flat(out)


def test_failures_only_lists_only_the_losses_that_are_not_up(capsys, written, make_inventory) -> None:
    text = make_inventory(services="services:\n  app: {min_capacity: 0.75}")
    code, out, _ = run(capsys, "plan", "--offline", "--failures-only", written(text))
    assert code == 0
    table = [line for line in out.splitlines() if line.startswith(("│ provider", "│ site"))]
    assert [line.split("│")[1].strip() for line in table] == [
        "provider hetzner", "provider leaseweb", "provider ovh", "site ams1", "site fra1", "site rbx1"]
    text = make_inventory()
    code, out, _ = run(capsys, "plan", "--offline", "--failures-only", written(text))
    assert code == 0
    assert not [line for line in out.splitlines() if line.startswith(("│ provider", "│ site"))]
    assert "6 of 6 losses leave every tier up (not listed: --failures-only)" in flat(out)


def test_provider_spelt_two_ways_is_not_a_second_provider(capsys, written, make_inventory, base_sites) -> None:
    """Before: `Hetzner` and `hetzner` were two providers and the proof said "survives" when it does not."""
    sites = {**base_sites, "fsn1": "{provider: Hetzner, vip: 10.4.0.100}"}
    code, _, err = run(capsys, "plan", "--offline", written(make_inventory(sites=sites)))
    assert code == ExitCode.ERROR
    assert "differs only in case from 'hetzner'" in flat(err)


# --- connecting to many hosts ---------------------------------------------------------------------------------


def test_too_few_open_files_is_one_clear_line_before_connecting_anywhere(capsys, written, make_inventory,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from deploykit.execute import executor, fanout

    monkeypatch.setattr(executor, "_require_gevent", lambda: None)  # this test process is not patched
    monkeypatch.setattr(executor, "ensure_open_files", lambda hosts: fanout.ensure_open_files(
        hosts, getrlimit=lambda _: (50, 50), setrlimit=lambda *_: None))
    monkeypatch.setattr(executor, "open_session", lambda entries: pytest.fail("connected"))
    code, out, err = run(capsys, "plan", written(make_inventory()))
    assert code == ExitCode.ERROR
    assert flat(err) == (
        "error: connecting to 9 hosts needs at least 73 open files (one socket per host, 64 for deploykit itself), "
        "but this process may open only 50 (hard limit 50); raise the limit before running deploykit: "
        "`ulimit -n 82` in the shell (raising the hard limit needs root: `nofile` in /etc/security/limits.conf), "
        "`LimitNOFILE=82` in a systemd unit, or connect to fewer hosts at once with --limit")
    assert out == ""
