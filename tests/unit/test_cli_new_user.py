"""Issue 8: the holes a new user found trying the CLI offline, each a wrong answer before the fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from deploykit.cli import main
from deploykit.errors import ExitCode

F = "inventory.yml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    assert isinstance(exc.value.code, int)
    return exc.value.code, captured.out, captured.err


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def written(write_inventory: Callable[..., Path]) -> Callable[[str], str]:
    def write(text: str) -> str:
        write_inventory(text)
        return F

    return write


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
