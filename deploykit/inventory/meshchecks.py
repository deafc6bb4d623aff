"""The inventory's `mesh:` section and the hosts' `mesh_address:` pins: checked, then every host's address.

Rules: the mesh network is a private IPv4 network (RFC 1918 or the shared 100.64.0.0/10), with room for
twice the hosts at least, that holds no host's public address and no VIP (a route to the mesh must never
capture the servers' own traffic); a pin lies inside it and is nobody else's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from deploykit.inventory import schema
from deploykit.inventory.mesh import allocate, usable
from deploykit.inventory.model import DEFAULT_MESH_NETWORK, MeshNetwork
from deploykit.inventory.yamlsource import KeyPath, Source

SHARED = IPv4Network("100.64.0.0/10")
PRIVATE = (IPv4Network("10.0.0.0/8"), IPv4Network("172.16.0.0/12"), IPv4Network("192.168.0.0/16"), SHARED)
MAX_PREFIX = 24  # a /24 has 254 addresses; smaller networks only make collisions likelier


@dataclass(frozen=True)
class MeshEntry:
    """One `hosts:` entry as far as the mesh is concerned."""

    path: KeyPath
    names: tuple[str, ...]
    pin: str | None  # its `mesh_address:` text


def build_mesh(src: Source, spec: schema.MeshSpec | None, entries: Iterable[MeshEntry],
               public: Iterable[IPv4Address]) -> tuple[MeshNetwork | None, dict[str, IPv4Address]]:
    """The mesh network and every host's mesh address; (None, {}) after recording the errors."""
    spec = spec or schema.MeshSpec()
    network = _network(src, spec.network)
    entries = list(entries)
    if network is None:
        return None, {}
    total = sum(len(e.names) for e in entries)
    if total * 2 > usable(network):
        src.error(("mesh", "network"), f"{network} has {usable(network)} addresses for {total} hosts; give it "
                  f"room for twice the hosts at least (e.g. a /{_prefix_for(total * 2)}), so that hashed "
                  "addresses rarely collide")
        return None, {}
    public_set = set(public)
    inside = sorted(a for a in public_set if a in network)
    if inside:
        src.error(("mesh", "network"), f"{network} contains {inside[0]}, a host address or VIP of this "
                  "inventory; the mesh needs a network of its own (set mesh: {network: ...})")
        return None, {}
    pinned = _pins(src, network, entries)
    if pinned is None:
        return None, {}
    names = [n for e in entries for n in e.names]
    return MeshNetwork(network=network, port=spec.port), allocate(names, network, pinned)


def _prefix_for(addresses: int) -> int:
    prefix = 32
    while prefix > 8 and (2 ** (32 - prefix)) - 2 < addresses:
        prefix -= 1
    return prefix


def _network(src: Source, text: str | None) -> IPv4Network | None:
    if text is None:
        return DEFAULT_MESH_NETWORK
    path: KeyPath = ("mesh", "network")
    try:
        network = IPv4Network(text.strip(), strict=False)
    except ValueError:
        src.error(path, f"'{text}' is not an IPv4 network; write it as address/prefix, e.g. 10.213.0.0/16")
        return None
    if str(network) != text.strip():
        src.error(path, f"'{text}' has host bits set; the network is {network}")
        return None
    if not any(network.subnet_of(p) for p in PRIVATE):
        src.error(path, f"{network} is not a private network; use one inside 10.0.0.0/8, 172.16.0.0/12, "
                  "192.168.0.0/16 or 100.64.0.0/10 that your providers do not use (default 10.213.0.0/16)")
        return None
    if network.prefixlen > MAX_PREFIX:
        src.error(path, f"{network} is too small for a mesh; use a /{MAX_PREFIX} or larger")
        return None
    return network


def _pins(src: Source, network: IPv4Network, entries: list[MeshEntry]) -> dict[str, IPv4Address] | None:
    pinned: dict[str, IPv4Address] = {}
    owner: dict[IPv4Address, str] = {}
    ok = True
    for e in entries:
        if e.pin is None:
            continue
        path = e.path + ("mesh_address",)
        try:
            first = IPv4Address(e.pin.strip())
        except ValueError:
            src.error(path, f"'{e.pin}' is not a valid IPv4 address; write four numbers 0-255 like "
                      f"{network.network_address + 10}")
            ok = False
            continue
        for i, name in enumerate(e.names):
            addr = first + i if int(first) + i <= 0xFFFFFFFF else first
            if addr not in network or addr in (network.network_address, network.broadcast_address):
                src.error(path, f"{addr} ({name}) is not a host address of the mesh network {network}")
                ok = False
                break
            if addr in owner:
                src.error(path, f"mesh address {addr} ({name}) is also pinned for '{owner[addr]}'")
                ok = False
                break
            owner[addr] = name
            pinned[name] = addr
    return pinned if ok else None
