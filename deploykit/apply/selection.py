"""`--limit`: which hosts a plan or apply touches (by host, role, site or provider name). Pure."""

from __future__ import annotations

from deploykit.errors import DeploykitError
from deploykit.inventory.model import ROLES, Host, Inventory
from deploykit.inventory.suggest import did_you_mean


class LimitError(DeploykitError):
    pass


def select_hosts(inv: Inventory, limits: tuple[str, ...]) -> list[Host]:
    if not limits:
        return list(inv.hosts)
    chosen: dict[str, Host] = {}
    names = {h.name for h in inv.hosts}
    for limit in limits:
        for item in (p.strip() for p in limit.split(",") if p.strip()):
            matched = [h for h in inv.hosts if item in (h.name, h.site, h.provider) or item in h.roles]
            if not matched:
                choices = [*names, *inv.sites, *inv.providers, *ROLES]
                raise LimitError(f"--limit {item}: no host, role, site or provider by that name"
                                 f"{did_you_mean(item, choices)}")
            chosen.update((h.name, h) for h in matched)
    return [h for h in inv.hosts if h.name in chosen]
