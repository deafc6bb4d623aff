"""Shared helpers for the unit tests: inventories written to tmp_path and checked from there.

Every helper is a fixture (tests never import this module), so the test files stay independent of how
pytest names conftest modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploykit.errors import Problem
from deploykit.inventory import Inventory, check_inventory
from deploykit.plan import Placement, ResilienceReport, analyse_resilience, plan_placement
from deploykit.plan.resilience import Scenario, Verdict

REPO = Path(__file__).resolve().parents[2]
INVENTORY_NAME = "inventory.yml"

# Three sites at three providers; two web hosts and one data host per site. Valid, and survives the loss
# of any provider or site. Line numbers matter to many tests: header lines 1-4, sites 5-8, hosts 9-18.
BASE_SITES: dict[str, str] = {
    "fra1": "{provider: hetzner, vip: 10.1.0.100}",
    "rbx1": "{provider: ovh, vip: 10.2.0.100}",
    "ams1": "{provider: leaseweb, vip: 10.3.0.100}",
}
BASE_HOSTS: dict[str, str] = {
    "fra1-web-[1:2]": "{address: 10.1.0.11, site: fra1, roles: [lb, app, worker]}",
    "fra1-data-1": "{address: 10.1.0.21, site: fra1, roles: [db, etcd, cache]}",
    "rbx1-web-[1:2]": "{address: 10.2.0.11, site: rbx1, roles: [lb, app, worker]}",
    "rbx1-data-1": "{address: 10.2.0.21, site: rbx1, roles: [db, etcd, cache]}",
    "ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, roles: [lb, app, worker]}",
    "ams1-data-1": "{address: 10.3.0.21, site: ams1, roles: [db, etcd, cache]}",
}


def inventory_text(
    *,
    hosts: dict[str, str] | None = None,
    sites: dict[str, str] | None = None,
    failure_domains: str = "[provider, site]",
    ssh: str = "",
    services: str = "",
    extra: str = "",
    name: str = "chirp-test",
) -> str:
    """A whole inventory; `hosts`/`sites` map keys to flow-style bodies, the rest is raw YAML text."""
    lines = ["version: 1", f"name: {name}", "domain: chirp.test", f"failure_domains: {failure_domains}", "sites:"]
    lines += [f"  {k}: {v}" for k, v in (BASE_SITES if sites is None else sites).items()]
    lines.append("hosts:")
    lines += [f"  {k}: {v}" for k, v in (BASE_HOSTS if hosts is None else hosts).items()]
    text = "\n".join(lines) + "\n"
    for part in (ssh, services, extra):
        if part:
            text += part if part.endswith("\n") else part + "\n"
    return text


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based number of the `nth` line of `text` that contains `needle`."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) >= nth, f"{needle!r} is not in the text {nth} time(s)"
    return found[nth - 1]


@dataclass
class Checked:
    inventory: Inventory | None
    problems: list[Problem]

    @property
    def rendered(self) -> list[str]:
        return [p.render() for p in self.problems]

    @property
    def errors(self) -> list[str]:
        return [p.render() for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[str]:
        return [p.render() for p in self.problems if p.severity == "warning"]

    @property
    def valid(self) -> bool:
        return self.inventory is not None

    def only_error(self) -> str:
        assert len(self.errors) == 1, self.rendered
        return self.errors[0]


@pytest.fixture(autouse=True, scope="session")
def zone_serials_outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The dns service numbers its zone in a file beside the inventory (`<name>.dns-serial`); tests that
    render the shipped inventories keep it out of the checkout."""
    from deploykit.services.dns import config as dns_config

    directory = tmp_path_factory.mktemp("dns-serials")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dns_config, "serial_path", lambda inv: directory / f"{inv.name}.dns-serial")
        yield directory


@pytest.fixture
def write_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Write text (or bytes) to tmp_path and chdir there: problems then render as `inventory.yml:LINE: ...`."""
    monkeypatch.chdir(tmp_path)

    def write(content: str | bytes, name: str = INVENTORY_NAME) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    return write


@pytest.fixture
def check_text(write_inventory: Callable[..., Path]) -> Callable[..., Checked]:
    """Write the text as ./inventory.yml and run check_inventory on that relative name."""

    def check(content: str | bytes, name: str = INVENTORY_NAME) -> Checked:
        write_inventory(content, name)
        inv, problems = check_inventory(name)
        return Checked(inv, problems)

    return check


@pytest.fixture
def load_text(check_text: Callable[..., Checked]) -> Callable[..., Inventory]:
    """The inventory of a text that must be valid (fails the test with every problem otherwise)."""

    def load(content: str) -> Inventory:
        checked = check_text(content)
        assert checked.inventory is not None, checked.rendered
        return checked.inventory

    return load


@dataclass
class Planned:
    inventory: Inventory
    placement: Placement
    report: ResilienceReport

    def scenario(self, level: str, unit: str) -> Scenario:
        for s in self.report.scenarios:
            if s.level == level and s.unit == unit:
                return s
        raise AssertionError(f"no scenario {level} {unit}: {[(s.level, s.unit) for s in self.report.scenarios]}")

    def verdict(self, level: str, unit: str, tier: str) -> Verdict:
        for v in self.scenario(level, unit).verdicts:
            if v.tier == tier:
                return v
        raise AssertionError(f"no tier {tier} in scenario {level} {unit}")


@pytest.fixture
def plan_text(load_text: Callable[..., Inventory]) -> Callable[..., Planned]:
    def plan(content: str) -> Planned:
        inv = load_text(content)
        placement = plan_placement(inv)
        return Planned(inv, placement, analyse_resilience(inv, placement))

    return plan


@pytest.fixture
def make_inventory() -> Callable[..., str]:
    return inventory_text


@pytest.fixture
def find_line() -> Callable[..., int]:
    return line_of


@pytest.fixture
def base_hosts() -> dict[str, str]:
    return dict(BASE_HOSTS)


@pytest.fixture
def base_sites() -> dict[str, str]:
    return dict(BASE_SITES)


@pytest.fixture
def repo_root() -> Path:
    return REPO


def check_golden(golden: Path, content: str) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(content, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run with UPDATE_GOLDEN=1"
    assert content == golden.read_text(encoding="utf-8")


@pytest.fixture
def matches_golden() -> Callable[[Path, str], None]:
    """The one golden-file check of every service's rendered files: `content` must equal the golden file
    (UPDATE_GOLDEN=1 writes it after an intended change)."""
    return check_golden


@pytest.fixture()
def lab_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    """inventories/lab.yml copied into a directory of its own, its secrets key under a temporary config home
    (so the secrets store and facts files of a test stay out of the checkout)."""
    import shutil

    from deploykit.inventory import load_inventory

    d = tmp_path / "inv"
    d.mkdir()
    shutil.copy(REPO / "inventories" / "lab.yml", d / "lab.yml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("DEPLOYKIT_KEY_FILE", raising=False)
    return load_inventory(d / "lab.yml")
