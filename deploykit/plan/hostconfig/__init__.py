"""Per-host, per-role typed configuration: what the roles render, computed from inventory + placement.

Each module here exposes `<role>_config(ctx, host) -> <Role>HostConfig` (a frozen dataclass holding only
what that host's templates need, in a stable order). Secrets come from `ctx.secret(name)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement
from deploykit.secret import Secret


@dataclass(frozen=True)
class ConfigContext:
    inv: Inventory
    placement: Placement
    secret: Callable[[str], Secret]  # generated on first use, stored encrypted; same value every run
