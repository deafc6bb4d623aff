"""`--limit`: which hosts a plan or apply touches (by host, role, site or provider name). Pure."""

from __future__ import annotations

import difflib

from deploykit.errors import DeploykitError
from deploykit.inventory.model import Host, Inventory
from deploykit.services import role_names

NEAREST = 4


class LimitError(DeploykitError):
    pass


def nearest(word: str, choices: list[str]) -> list[str]:
    """The names most like `word` (always some, however unlike: a typo of a long host name may score low)."""
    return difflib.get_close_matches(word, sorted(set(choices)), n=NEAREST, cutoff=0.0)


def select_hosts(inv: Inventory, limits: tuple[str, ...]) -> list[Host]:
    if not limits:
        return list(inv.hosts)
    chosen: dict[str, Host] = {}
    for limit in limits:
        for item in (p.strip() for p in limit.split(",") if p.strip()):
            matched = [h for h in inv.hosts if item in (h.name, h.site, h.provider) or item in h.roles]
            if not matched:
                choices = [*(h.name for h in inv.hosts), *inv.sites, *inv.providers, *role_names()]
                close = nearest(item, choices)
                raise LimitError(f"--limit {item}: no host, role, site or provider by that name in "
                                 f"{inv.path.name} (did you mean '{close[0]}'? nearest: {', '.join(close)})")
            chosen.update((h.name, h) for h in matched)
    return [h for h in inv.hosts if h.name in chosen]
