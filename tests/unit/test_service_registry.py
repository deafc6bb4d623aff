"""The service registry (issue 8): a service is one package registered in one line, and the shared machinery
(inventory roles, placement, resilience, desired states, base's firewall, the load balancers, the apply) picks
it up without naming it. Shown with a trivial `search` service defined here and registered in a tuple.

Also: the services' declarations (secrets, packages) cover what their desired states actually use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
from fake_executor import FakeExecutor, online_plan

from deploykit.apply.phases import desired_states
from deploykit.apply.runner import apply_plan
from deploykit.inventory import Host, Inventory, check_inventory, load_inventory
from deploykit.plan import analyse_resilience, plan_placement
from deploykit.plan.desired import ManagedFile, RoleState, Unit
from deploykit.plan.placement import HostGroup, host_group
from deploykit.plan.verdict import Status, Verdict
from deploykit.secret import Secret
from deploykit.services import SERVICES, inventory_roles, role_names, service_named
from deploykit.services.base.config import firewall_rules
from deploykit.services.contract import (
    Backend,
    ConfigContext,
    FirewallRule,
    Frontend,
    PlacementContext,
    Service,
    TierContext,
)
from deploykit.services.ports import addresses, mesh_addresses

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"
PORT = 9308
LB_PORT = 9309
CONF = "/etc/search/search.conf"


@dataclass(frozen=True)
class SearchConfig:
    host: str
    port: int
    api_key: Secret


class Search(Service):
    """A trivial service: everything deploykit knows about it is here."""

    name = "search"
    tier_column = 70
    secrets = ("search-*",)
    packages = ("sphinxsearch",)

    def place(self, ctx: PlacementContext) -> HostGroup:
        return host_group(ctx.inv.with_role(self.name))

    def judge(self, ctx: TierContext) -> Verdict | None:
        group = ctx.placement.part(self.name, HostGroup)
        if not group:
            return None
        alive = len(group) - group.lost(ctx.gone)
        if not alive:
            return Verdict(self.name, Status.DOWN, f"{ctx.what} loses every search host", "add one elsewhere")
        if alive < len(group):
            return Verdict(self.name, Status.DEGRADED, f"{alive} of {len(group)} search hosts: slower searches")
        return Verdict(self.name, Status.UP, f"all {len(group)} search hosts unaffected")

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        return (FirewallRule("search API", "tcp", PORT, addresses(ctx.inv, "app")),)

    def frontends(self, inv: Inventory, site: str) -> tuple[Frontend, ...]:
        backends = tuple(Backend(h.name, h.address, PORT, backup=False) for h in inv.with_role(self.name))
        return (Frontend("search", LB_PORT, "tcp", "GET /health", backends, check_path="/health",
                         clients=("app",), label="search"),) if backends else ()

    def config(self, ctx: ConfigContext, host: Host) -> SearchConfig:
        return SearchConfig(host.name, PORT, ctx.secret("search-api-key"))

    def desired(self, cfg: SearchConfig) -> RoleState:
        content = f"# {cfg.host}\nlisten = {cfg.port}\napi_key = {cfg.api_key.reveal()}\n"
        return RoleState(self.name, packages=self.packages,
                         files=(ManagedFile(CONF, content, mode="0640", notify=("search",)),),
                         services=(Unit("search"),))


SEARCH = Search()
WITH_SEARCH: tuple[Service, ...] = (*SERVICES, SEARCH)  # the one line that registers it


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


@pytest.fixture
def search_inventory(make_inventory: Callable[..., str], base_hosts: dict[str, str],
                     write_inventory: Callable[..., Path]) -> Path:
    hosts = {**base_hosts,
             "fra1-search-1": "{address: 10.1.0.31, site: fra1, roles: [search]}",
             "rbx1-search-1": "{address: 10.2.0.31, site: rbx1, roles: [search]}"}
    return write_inventory(make_inventory(hosts=hosts))


@pytest.fixture
def inv(search_inventory: Path) -> Inventory:
    return load_inventory(search_inventory, roles=inventory_roles(WITH_SEARCH))


def test_its_role_is_an_inventory_role_once_registered(search_inventory: Path) -> None:
    assert "search" not in inventory_roles() and inventory_roles(WITH_SEARCH)[-1] == "search"
    assert role_names(WITH_SEARCH)[-1] == "search" and service_named("search", WITH_SEARCH) is SEARCH
    with pytest.raises(KeyError):
        service_named("search")
    inv, problems = check_inventory(search_inventory)  # the default registry does not know it
    assert inv is None and any("unknown role 'search'" in p.render() for p in problems)
    inv, problems = check_inventory(search_inventory, roles=inventory_roles(WITH_SEARCH))
    assert inv is not None and [p.render() for p in problems if p.severity == "error"] == []
    assert [h.name for h in inv.with_role("search")] == ["fra1-search-1", "rbx1-search-1"]


def test_placement_holds_its_part(inv: Inventory) -> None:
    placement = plan_placement(inv, WITH_SEARCH)
    assert [m.name for m in placement.part("search", HostGroup).members] == ["fra1-search-1", "rbx1-search-1"]
    assert "search" not in plan_placement(inv).parts


def test_resilience_judges_it_by_its_own_rule(inv: Inventory) -> None:
    report = analyse_resilience(inv, plan_placement(inv, WITH_SEARCH), WITH_SEARCH)
    assert report.tiers[-1] == "search"  # its tier_column: innermost
    by_unit = {(s.level, s.unit): {v.tier: v for v in s.verdicts} for s in report.scenarios}
    assert by_unit[("site", "fra1")]["search"] == Verdict("search", Status.DEGRADED,
                                                          "1 of 2 search hosts: slower searches")
    assert by_unit[("provider", "leaseweb")]["search"].status is Status.UP
    assert report.survives  # one search host is always left


def test_its_desired_state_and_firewall_come_with_it(inv: Inventory) -> None:
    placement = plan_placement(inv, WITH_SEARCH)
    states = desired_states(inv, placement, secret, services=WITH_SEARCH)
    assert [s.role for s in states["fra1-search-1"]] == ["base", "mesh", "search"]
    (search,) = [s for s in states["fra1-search-1"] if s.role == "search"]
    assert search.files[0].path == CONF and "api_key = s3cr3t-search-api-key" in search.files[0].content
    # base's firewall opens its port on its hosts, to the app hosts only
    host = next(h for h in inv.hosts if h.name == "fra1-search-1")
    ctx = ConfigContext(inv, placement, secret, services=WITH_SEARCH)
    rule = FirewallRule("search API", "tcp", PORT, addresses(inv, "app"))
    assert rule in firewall_rules(ctx, host)
    (nft,) = [f for s in states["fra1-search-1"] if s.role == "base" for f in s.files if f.path == "/etc/nftables.conf"]
    app = ", ".join(str(a) for a in addresses(inv, "app"))
    assert f"ip saddr {{ {app} }} tcp dport {PORT} accept" in nft.content
    web = next(h for h in inv.hosts if h.name == "fra1-web-1")
    assert all(r.port != PORT for r in firewall_rules(ctx, web))
    # and the load balancers serve its frontend, open to its clients
    (cfg,) = [f for s in states["fra1-web-1"] if s.role == "lb" for f in s.files if f.path.endswith("haproxy.cfg")]
    assert "listen search" in cfg.content and f":{LB_PORT}" in cfg.content
    # on the mesh only, from the clients' mesh addresses, like every internal port of the load balancers
    assert FirewallRule("HAProxy search", "tcp", LB_PORT, mesh_addresses(inv, "app"), inv.mesh.interface) \
        in firewall_rules(ctx, web)


def test_the_apply_runs_its_phase_after_the_others_and_stops_on_its_tier(inv: Inventory) -> None:
    placement = plan_placement(inv, WITH_SEARCH)
    states = desired_states(inv, placement, secret, services=WITH_SEARCH)
    fake = FakeExecutor()
    result = apply_plan(online_plan(inv, states), fake, placement, on_phase=fake.on_phase, services=WITH_SEARCH)
    assert result.ok
    assert fake.phases() == ["base", "mesh", "etcd", "db", "pooler", "backup", "cache", "lb", "app", "search"]
    assert fake.briefs()[-1] == ("search", "change", ("fra1-search-1", "rbx1-search-1"))
    assert fake.calls[-1].descriptions("fra1-search-1")[0] == "install sphinxsearch"

    fake = FakeExecutor().fail("fra1-search-1", phase="search").fail("rbx1-search-1", phase="search")
    result = apply_plan(online_plan(inv, states), fake, placement, on_phase=fake.on_phase, services=WITH_SEARCH)
    assert result.aborted == ("stopped after phase search: search: without fra1-search-1, rbx1-search-1 "
                              "loses every search host")

    fake = FakeExecutor()
    result = apply_plan(online_plan(inv, states, unreachable={"fra1-search-1": "unreachable: timed out"}), fake,
                        placement, services=WITH_SEARCH)
    assert result.degraded == ["search: 1 of 2 search hosts: slower searches"]


class Exporter(Service):
    """A service without a role of its own: it runs on the hosts of the cache role (`host_role`)."""

    name = "exporter"
    host_role = "cache"

    def config(self, ctx: ConfigContext, host: Host) -> str:
        return host.name

    def desired(self, cfg: str) -> RoleState:
        return RoleState(self.name, files=(ManagedFile("/etc/exporter.conf", f"# {cfg}\n"),))


def test_a_service_on_another_roles_hosts_is_no_role_of_its_own(search_inventory: Path) -> None:
    exporter = Exporter()
    with_exporter = (*SERVICES, exporter)
    assert exporter.role is None
    assert "exporter" not in inventory_roles(with_exporter) and "exporter" not in role_names(with_exporter)
    inv = load_inventory(search_inventory, roles=inventory_roles(WITH_SEARCH))
    assert [h.name for h in inv.hosts if exporter.runs_on(h)] == [h.name for h in inv.with_role("cache")]
    states = desired_states(inv, plan_placement(inv, with_exporter), secret, services=with_exporter)
    assert {n for n, per_host in states.items() if any(s.role == "exporter" for s in per_host)} == {
        h.name for h in inv.with_role("cache")}


# --- the registered services' declarations ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab_states() -> tuple[dict[str, list[RoleState]], list[str]]:
    inv = load_inventory(LAB)
    asked: list[str] = []

    def recording(name: str) -> Secret:
        asked.append(name)
        return secret(name)

    return desired_states(inv, plan_placement(inv), recording), asked


def test_every_secret_asked_for_is_declared_by_a_service(lab_states: tuple[dict, list[str]]) -> None:
    _, asked = lab_states
    assert asked, "computing the lab's desired states asked for no secret"
    patterns = {p: s.name for s in SERVICES for p in s.secrets}
    undeclared = sorted({n for n in asked if not any(fnmatch(n, p) for p in patterns)})
    assert undeclared == []
    # and each declared pattern is used by the lab (a stale declaration would hide an undeclared secret)
    assert sorted(p for p in patterns if not any(fnmatch(n, p) for n in asked)) == []


def test_every_service_declares_the_packages_its_desired_states_install(
        lab_states: tuple[dict, list[str]]) -> None:
    states, _ = lab_states
    missing = {(s.role, p) for per_host in states.values() for s in per_host
               for p in s.packages if p not in service_named(s.role).packages}
    assert missing == set()
    assert {s.role for per_host in states.values() for s in per_host if s.packages} >= {"base", "etcd", "db",
                                                                                        "cache", "lb", "app"}
