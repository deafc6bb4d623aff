"""The apply's abort rule: the services' own tier rules (the ones the resilience proof uses), asked about
the hosts the apply cannot count on. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Status, Verdict
from deploykit.services.contract import Service, TierContext

MAX_NAMED = 5


def without(names: Iterable[str]) -> str:
    ordered = sorted(names)
    if not ordered:
        return "with every host"
    shown = ", ".join(ordered[:MAX_NAMED])
    more = f" and {len(ordered) - MAX_NAMED} more" if len(ordered) > MAX_NAMED else ""
    return f"without {shown}{more}"


def tier_verdicts(inv: Inventory, placement: Placement, services: tuple[Service, ...], lost: set[str],
                  failed_in: dict[str, set[str]]) -> dict[str, Verdict]:
    """Each tier's verdict, in phase order. `lost`: hosts unusable for every tier (unreachable, probe
    failed); `failed_in`: hosts that failed a phase, which count as lost for that tier and every later one
    (the tiers applied before keep running on them)."""
    verdicts: dict[str, Verdict] = {}
    failed: set[str] = set()
    for service in services:
        failed |= failed_in.get(service.name, set())
        gone = frozenset(lost | failed)
        verdict = service.judge(TierContext(inv, placement, gone, without(gone), "host", verdicts))
        if verdict is not None:
            verdicts[service.name] = verdict
    return verdicts


def shortfall(verdicts: dict[str, Verdict]) -> str:
    """'' unless some tier is down; else which one, and why."""
    for name, v in verdicts.items():
        if v.status is Status.DOWN:
            return f"{name}: {v.reason}"
    return ""


def degraded(verdicts: dict[str, Verdict]) -> list[str]:
    return [f"{name}: {v.reason}" for name, v in verdicts.items() if v.status is Status.DEGRADED]
