"""Per-host mesh configuration: the host's mesh address and every other inventory host as a peer.

A full mesh: every host has a tunnel to every other, so no host relays another's traffic and losing any host
or provider leaves every other pair connected. Each peer is reached at its public address and allowed exactly
its own mesh address (WireGuard routes by the peers' allowed addresses: a packet to 10.77.128.9 goes to the one
peer that owns it, and a packet from a peer is accepted only with that peer's own source address). A peer
whose public key is not known yet (its first apply has not run: an offline plan, or a host not reachable
now) is left out and named, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.services.contract import ConfigContext

PUBLIC_KEY = "mesh-public-key"
KERNEL = "mesh-kernel"
HANDSHAKES = "mesh-handshakes"
KEEPALIVE_S = 25  # keeps every tunnel's session fresh (and NAT/conntrack state open) without traffic
STALE_HANDSHAKE_S = 300  # WireGuard renews a used session every 2 minutes; older than this: the tunnel is down


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    public_key: str
    endpoint: str  # public address:port
    mesh_address: IPv4Address


@dataclass(frozen=True, slots=True)
class MeshHostConfig:
    host: str
    interface: str
    address: IPv4Address
    prefixlen: int
    port: int
    keepalive: int
    peers: tuple[Peer, ...]  # by name
    unknown_keys: tuple[str, ...]  # other hosts left out: their public key is not known yet
    userspace: bool  # no WireGuard in this host's kernel: wireguard-go runs it

    @property
    def key_file(self) -> str:
        return f"/etc/wireguard/{self.interface}.key"

    @property
    def conf_file(self) -> str:
        return f"/etc/wireguard/{self.interface}.conf"

    @property
    def unit(self) -> str:
        return f"wg-quick@{self.interface}"


def mesh_config(ctx: ConfigContext, host: Host) -> MeshHostConfig:
    inv = ctx.inv
    peers, unknown = [], []
    for other in inv.hosts:
        if other.name == host.name:
            continue
        key = ctx.fact(other.name, PUBLIC_KEY)
        if key is None:
            unknown.append(other.name)
            continue
        peers.append(Peer(other.name, key, f"{other.address}:{inv.mesh.port}", other.mesh_address))
    return MeshHostConfig(
        host=host.name,
        interface=inv.mesh.interface,
        address=host.mesh_address,
        prefixlen=inv.mesh.network.prefixlen,
        port=inv.mesh.port,
        keepalive=KEEPALIVE_S,
        peers=tuple(peers),
        unknown_keys=tuple(unknown),
        userspace=ctx.fact(host.name, KERNEL) == "userspace",
    )


def stale_tunnels(ctx: ConfigContext, host: Host) -> tuple[str, ...]:
    """The peers of `host` whose tunnel had no handshake for STALE_HANDSHAKE_S (or never), by name."""
    from deploykit.services.mesh.keys import parse_handshakes

    seen = parse_handshakes(ctx.fact(host.name, HANDSHAKES))
    if seen is None:
        return ()
    _, ages = seen
    stale = []
    for other in ctx.inv.hosts:
        key = ctx.fact(other.name, PUBLIC_KEY)
        if other.name == host.name or key is None:
            continue
        age = ages.get(key)
        if age is None or age < 0 or age > STALE_HANDSHAKE_S:
            stale.append(other.name)
    return tuple(stale)
