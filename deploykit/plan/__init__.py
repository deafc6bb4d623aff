"""Placement and resilience analysis: pure functions of the inventory, generic over the services."""

from deploykit.plan.placement import Placement, plan_placement
from deploykit.plan.resilience import ResilienceReport, analyse_resilience
from deploykit.plan.verdict import Status

__all__ = ["Placement", "ResilienceReport", "Status", "analyse_resilience", "plan_placement"]
