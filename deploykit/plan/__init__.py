"""Placement, resilience analysis and per-host service config: pure functions of the inventory."""

from deploykit.plan.placement import Placement, plan_placement
from deploykit.plan.resilience import ResilienceReport, Status, analyse_resilience

__all__ = ["Placement", "ResilienceReport", "Status", "analyse_resilience", "plan_placement"]
