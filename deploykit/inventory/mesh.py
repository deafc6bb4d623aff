"""Mesh addresses: each host's address on the private WireGuard network, derived from its name.

A host's address is a pure function of its name and the mesh network, not of its position in the file or of
the other hosts: the name's SHA-256 picks a slot in the network, so adding, removing or reordering hosts
leaves every other host's address where it was. Two names can hash to the same slot (at 500 hosts in a /16,
about one chance in 130 for each host added); the later name in sorted order then takes the next free slot,
which is stable too as long as the earlier one stays. A host may also pin its address (`mesh_address:` in
its entry): pinned hosts are placed first, so a pin never moves, and pinning is the way to keep an address
that a collision would otherwise move (the online plan shows any mesh address change as a change of that
host's WireGuard config and of every peer's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network


class MeshFull(ValueError):
    """More hosts than the mesh network has room for."""


def usable(network: IPv4Network) -> int:
    """Host slots in `network` (its network and broadcast addresses excluded)."""
    return max(0, network.num_addresses - 2)


def preferred_slot(name: str, network: IPv4Network) -> int:
    """The slot (1 .. usable) the name hashes to."""
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return 1 + digest % usable(network)


def allocate(names: Iterable[str], network: IPv4Network,
             pinned: Mapping[str, IPv4Address] | None = None) -> dict[str, IPv4Address]:
    """Name -> mesh address for every name: the pinned ones as given, the others at their hashed slot or
    the next free one after it (wrapping), in name order."""
    pinned = dict(pinned or {})
    size = usable(network)
    wanted = sorted(set(names))
    if len(wanted) > size:
        raise MeshFull(f"{len(wanted)} hosts do not fit in the mesh network {network} ({size} addresses)")
    base = int(network.network_address)
    taken = {int(a) - base for a in pinned.values()}
    out: dict[str, IPv4Address] = {n: a for n, a in pinned.items() if n in wanted}
    for name in wanted:
        if name in out:
            continue
        slot = preferred_slot(name, network)
        while slot in taken:
            slot = slot % size + 1
        taken.add(slot)
        out[name] = IPv4Address(base + slot)
    return out
