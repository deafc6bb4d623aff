"""mesh: a WireGuard network between every inventory host; every internal service talks over it.

Phase right after base (whose firewall already opens the WireGuard port), before any service that listens
on a mesh address. See docs/network.md.
"""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.services.contract import ConfigContext, FirewallRule, HostFact, Section, Service, Sysctl, listed
from deploykit.services.mesh import keys
from deploykit.services.mesh.config import (
    HANDSHAKES,
    KERNEL,
    PUBLIC_KEY,
    STALE_HANDSHAKE_S,
    MeshHostConfig,
    mesh_config,
    stale_tunnels,
)
from deploykit.services.mesh.state import PACKAGES, USERSPACE_PACKAGES, desired


class Mesh(Service):
    name = "mesh"
    every_host = True
    packages = PACKAGES + USERSPACE_PACKAGES  # the lab's image holds both; a host installs what it needs
    host_facts = (
        HostFact(PUBLIC_KEY, keys.READ_PUBLIC_KEY, keys.ENSURE_PUBLIC_KEY),
        HostFact(KERNEL, keys.KERNEL_SUPPORT),
        HostFact(HANDSHAKES, keys.HANDSHAKES, stored=False),
    )

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        others = tuple(h.address for h in ctx.inv.hosts if h.name != host.name)
        return (FirewallRule("WireGuard mesh from the inventory's hosts", "udp", ctx.inv.mesh.port, others),)

    def sysctls(self, host: Host) -> tuple[Sysctl, ...]:
        # Services bind their mesh address; at boot they may start before wg-quick has put it up.
        return (Sysctl("net.ipv4.ip_nonlocal_bind", "1", "services bind mesh addresses before the mesh is up"),)

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        rows = tuple((h.name, str(h.address), str(h.mesh_address)) for h in inv.hosts)
        head = (f"mesh {inv.mesh.network} on {inv.mesh.interface}, WireGuard UDP {inv.mesh.port}",
                listed([h.name for h in inv.hosts]), f"{len(inv.hosts)} hosts, full mesh")
        if len(rows) > 40:
            return (Section("Mesh", ("network", "hosts", "tunnels"), (head,)),)
        return (Section("Mesh", ("host", "public address", "mesh address"), rows),)

    def config(self, ctx: ConfigContext, host: Host) -> MeshHostConfig:
        return mesh_config(ctx, host)

    def desired(self, cfg: MeshHostConfig) -> RoleState:
        return desired(cfg)

    def check(self, ctx: ConfigContext, host: Host) -> tuple[str, ...]:
        stale = stale_tunnels(ctx, host)
        if not stale:
            return ()
        return (f"no WireGuard handshake with {listed(list(stale))} in the last {STALE_HANDSHAKE_S} s",)


SERVICE = Mesh()
