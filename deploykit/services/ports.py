"""Helpers for the ports services open: who may connect (pure)."""

from __future__ import annotations

from ipaddress import IPv4Address

from deploykit.inventory.model import Inventory
from deploykit.inventory.names import natural_key


def addresses(inv: Inventory, *roles: str) -> tuple[IPv4Address, ...]:
    """Addresses of the hosts with any of `roles`, each once, in host-name order."""
    if len(roles) == 1:
        return tuple(h.address for h in inv.with_role(roles[0]))  # already in host-name order
    chosen = {h.name: h for r in roles for h in inv.with_role(r)}
    return tuple(chosen[n].address for n in sorted(chosen, key=natural_key))


def mesh_addresses(inv: Inventory, *roles: str) -> tuple[IPv4Address, ...]:
    """Mesh addresses of the hosts with any of `roles`, each once, in host-name order: the sources of an
    internal port's firewall rule (on the mesh interface, `inv.mesh.interface`)."""
    chosen = {h.name: h for r in roles for h in inv.with_role(r)}
    return tuple(chosen[n].mesh_address for n in sorted(chosen, key=natural_key))
