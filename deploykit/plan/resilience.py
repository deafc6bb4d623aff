"""Resilience: for every unit of every failure-domain level, remove its hosts and judge each tier.

Generic: every tier rule comes from its service (`Service.judge`), the same rule the apply uses to decide
whether it may go on without some hosts (`deploykit.apply.tiers`). Worst case throughout: a Patroni leader, a
Redis master or a VIP holder may sit in the lost unit (they move at every failover), so a tier is "up" only if
it keeps serving wherever its leader was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement, units
from deploykit.plan.verdict import Status, Verdict

if TYPE_CHECKING:
    from deploykit.services.contract import Service

__all__ = ["ResilienceReport", "Scenario", "Status", "Verdict", "analyse_resilience", "judge_tiers"]


@dataclass(frozen=True, slots=True)
class Scenario:
    level: str
    unit: str
    lost_hosts: tuple[str, ...]
    verdicts: tuple[Verdict, ...]

    @property
    def status(self) -> Status:
        return max((v.status for v in self.verdicts), key=lambda s: s.rank, default=Status.UP)

    @property
    def title(self) -> str:
        return f"losing {self.level} {self.unit}"


@dataclass(frozen=True, slots=True)
class ResilienceReport:
    failure_domains: tuple[str, ...]
    tiers: tuple[str, ...]  # tiers present in the inventory, in table order
    scenarios: tuple[Scenario, ...]

    @property
    def survives(self) -> bool:
        return all(s.status is not Status.DOWN for s in self.scenarios)

    @property
    def failures(self) -> tuple[tuple[Scenario, Verdict], ...]:
        return tuple((s, v) for s in self.scenarios for v in s.verdicts if v.status is Status.DOWN)

    @property
    def degradations(self) -> tuple[tuple[Scenario, Verdict], ...]:
        return tuple((s, v) for s in self.scenarios for v in s.verdicts if v.status is Status.DEGRADED)


def judge_tiers(inv: Inventory, placement: Placement, services: tuple[Service, ...], gone: frozenset[str],
                what: str, level: str) -> dict[str, Verdict]:
    """Every service's tier verdict without the `gone` hosts, in phase order (later rules see earlier ones)."""
    from deploykit.services.contract import TierContext

    verdicts: dict[str, Verdict] = {}
    for service in services:
        verdict = service.judge(TierContext(inv, placement, gone, what, level, verdicts))
        if verdict is not None:
            verdicts[service.name] = verdict
    return verdicts


def analyse_resilience(inv: Inventory, placement: Placement,
                       services: tuple[Service, ...] | None = None) -> ResilienceReport:
    from deploykit.services import SERVICES

    chosen = SERVICES if services is None else services
    columns = {s.name: s.tier_column for s in chosen}
    intact = judge_tiers(inv, placement, chosen, frozenset(), "losing nothing", "host")
    tiers = tuple(sorted(intact, key=lambda t: columns[t]))
    scenarios: list[Scenario] = []
    for level in inv.failure_domains:
        for unit, lost in units(inv, level).items():
            gone = frozenset(h.name for h in lost)
            verdicts = judge_tiers(inv, placement, chosen, gone, f"losing {level} {unit}", level)
            scenarios.append(Scenario(level, unit, tuple(sorted(gone)), tuple(verdicts[t] for t in tiers)))
    return ResilienceReport(inv.failure_domains, tiers, tuple(scenarios))
