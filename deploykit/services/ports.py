"""Helpers for the ports services open: who may connect (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address

from deploykit.inventory.model import Inventory


def addresses(inv: Inventory, *roles: str) -> tuple[IPv4Address, ...]:
    """Addresses of the hosts with any of `roles`, each once, in host-name order."""
    return tuple(h.address for h in inv.hosts if any(h.has(r) for r in roles))
