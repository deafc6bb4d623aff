"""Placement and resilience report as plain JSON-able data (for `plan --json` and CI)."""

from __future__ import annotations

import dataclasses
from enum import Enum
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.plan.resilience import ResilienceReport

if TYPE_CHECKING:
    from deploykit.services.contract import Service


def to_data(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, IPv4Address | Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_data(v) for v in obj]
    return obj


def offline_plan_data(inv: Inventory, placement: Placement, report: ResilienceReport,
                      services: tuple[Service, ...] | None = None) -> dict[str, Any]:
    from deploykit.services import SERVICES

    chosen = SERVICES if services is None else services
    return {
        "format": "deploykit.plan/v1",
        "inventory": str(inv.path),
        "name": inv.name,
        "hosts": len(inv.hosts),
        "sites": {s.name: {"provider": s.provider, "vip": str(s.vip) if s.vip else None} for s in inv.sites.values()},
        "placement": {s.name: s.describe_data(placement[s.name]) for s in chosen if s.name in placement.parts},
        "resilience": {
            "failure_domains": list(report.failure_domains),
            "survives": report.survives,
            "scenarios": [
                {"level": s.level, "unit": s.unit, "status": s.status.value, "lost_hosts": list(s.lost_hosts),
                 "tiers": {v.tier: {"status": v.status.value, "reason": v.reason, "fix": v.fix} for v in s.verdicts}}
                for s in report.scenarios
            ],
        },
        "warnings": list(inv.warnings),
    }
