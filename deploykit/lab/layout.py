"""Where each lab server goes: its segment (one /24 per site, a bridge each) and its names, from the inventory.

Pure: checks the inventory fits the lab (addresses and the mesh in 10.77.0.0/16, one /24 per site, short host names) and
derives bridge names and gateway addresses. Nothing here touches the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from deploykit.errors import LabError
from deploykit.inventory.model import Inventory

LAB_RANGE = IPv4Network("10.77.0.0/16")
MAX_HOST_NAME = 12  # the host-side veth is "vb-<name>" and interface names have at most 15 characters
BRIDGE_PREFIX = "dklab"


@dataclass(frozen=True, slots=True)
class Segment:
    site: str
    provider: str
    network: IPv4Network  # the site's /24

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.network.network_address.packed[2]}"

    @property
    def gateway(self) -> IPv4Address:
        """The machine's own address on the segment (the controller, and the route to the other sites)."""
        return self.network.network_address + 1


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: IPv4Address
    site: str
    provider: str
    segment: Segment
    cpu_weight: int = 1  # its share of this machine's CPUs against the lab's other servers (see cpu_weight)

    @property
    def veth(self) -> str:
        return f"vb-{self.name}"


@dataclass(frozen=True, slots=True)
class Layout:
    lab: str
    segments: tuple[Segment, ...]
    servers: tuple[Server, ...]  # inventory order (sorted by name)

    def server(self, name: str) -> Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise LabError(f"no server {name!r} in lab {self.lab} (servers: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)

    def select(self, target: str) -> tuple[Server, ...]:
        """The servers a HOST, SITE or PROVIDER name stands for."""
        for key in ("name", "site", "provider"):
            found = tuple(s for s in self.servers if getattr(s, key) == target)
            if found:
                return found
        raise LabError(f"{target!r} is no server, site or provider of lab {self.lab}")


# A real server has CPUs of its own; lab servers share this machine's. When the app hosts all start their
# processes at once (a first deploy of 42 of them on 2 CPUs), an equal share per server starved the 3 data hosts
# until etcd lost its leader and Patroni its lock (two failovers in one first apply, measured). The servers whose
# failure detectors have second-scale timeouts get a bigger share, the load balancers a middle one: under
# contention they keep a core's worth between them, as on their own hardware; idle shares cost nothing.
CPU_WEIGHTS = (({"etcd", "db", "cache"}, 8), ({"lb", "dns", "backup"}, 4))


def cpu_weight(roles: tuple[str, ...] | frozenset[str] | set[str]) -> int:
    """A lab server's CPU share relative to a plain (app, worker) server's: the largest of its roles'."""
    return max((w for group, w in CPU_WEIGHTS if group & set(roles)), default=1)


def plan_layout(inv: Inventory) -> Layout:
    problems: list[str] = []
    where = inv.path.name
    if not inv.mesh.network.subnet_of(LAB_RANGE):
        problems.append(f"mesh network {inv.mesh.network} is outside the lab range {LAB_RANGE} "
                        "(set e.g. mesh: {network: 10.77.128.0/17})")
    for site in inv.sites.values():
        if site.vip is not None and site.vip not in LAB_RANGE:
            problems.append(f"site {site.name}: VIP {site.vip} is outside the lab range {LAB_RANGE}")
    for h in inv.hosts:
        if h.address not in LAB_RANGE:
            problems.append(f"host {h.name}: address {h.address} is outside the lab range {LAB_RANGE}")
        if len(h.name) > MAX_HOST_NAME:
            problems.append(f"host {h.name}: lab host names have at most {MAX_HOST_NAME} characters")
        if h.ssh.user != "root":
            problems.append(f"host {h.name}: lab servers take SSH as root (ssh.user is {h.ssh.user!r})")
    if problems:
        raise LabError(f"{where}: " + "; ".join(problems))

    segments: dict[str, Segment] = {}
    for site in inv.sites.values():
        addresses = [h.address for h in inv.in_site(site.name)] + ([site.vip] if site.vip else [])
        if not addresses:
            continue
        nets = sorted({IPv4Network(f"{a}/24", strict=False) for a in addresses})
        if len(nets) > 1:
            spans = ", ".join(str(n) for n in nets)
            raise LabError(
                f"{where}: site {site.name}: its addresses span several /24s ({spans}); a lab site is one /24"
            )
        seg = Segment(site=site.name, provider=site.provider, network=nets[0])
        for other in segments.values():
            if other.network == seg.network:
                raise LabError(
                    f"{where}: sites {other.site} and {site.name} share {seg.network}; each site needs its own /24"
                )
        for a in addresses:
            if a in (seg.network.network_address, seg.gateway, seg.network.broadcast_address):
                raise LabError(
                    f"{where}: site {site.name}: {a} is reserved in the lab ({seg.gateway} is the machine's)"
                )
        segments[site.name] = seg
    servers = tuple(
        Server(name=h.name, address=h.address, site=h.site, provider=h.provider, segment=segments[h.site],
               cpu_weight=cpu_weight(h.roles))
        for h in inv.hosts
    )
    return Layout(lab=inv.name, segments=tuple(segments.values()), servers=servers)
