"""One etcd member's configuration (Debian's etcd-server 3.4, configured through /etc/default/etcd).

Timing: etcd's defaults (heartbeat 100 ms, election 1000 ms) assume one datacentre. Members here sit at
different providers (round trips of 10-30 ms, with jitter), so the heartbeat is 200 ms and the election
timeout ten heartbeats, 2000 ms (etcd's tuning guide: heartbeat about the round trip, election at least ten
times that). The election timeout stays under Patroni's retry_timeout (4 s by default): losing the etcd
leader is settled before Patroni gives up on a DCS write and demotes a healthy primary.

Addresses: members talk to each other (peer URLs) and Patroni talks to them (client URLs) over the WireGuard
mesh only, on each member's mesh address. The client URLs listen on 127.0.0.1 too, for etcdctl on the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.services.contract import ConfigContext
from deploykit.services.etcd.membership import DATA_FACT, MEMBERS_FACT, RunningMember, has_data, parse_members
from deploykit.services.etcd.placement import EtcdPlan, etcd_plan

HEARTBEAT_MS = 200
ELECTION_MS = 2000
# Patroni renews its leader key every loop_wait; without compaction the revision history grows until
# etcd's 2 GiB space quota stops all writes (and with them failover).
COMPACTION_RETENTION = "1h"


@dataclass(frozen=True, slots=True)
class EtcdHostConfig:
    name: str
    mesh_address: IPv4Address  # where it listens for peers and clients (and 127.0.0.1 for local clients)
    client_port: int
    peer_port: int
    token: str  # initial cluster token; also names the data directory
    data_dir: str
    initial_cluster: str  # name=http://<mesh address>:peer_port,... for every member, by name
    listen_peer_urls: str
    listen_client_urls: str
    advertise_peer_urls: str
    advertise_client_urls: str
    heartbeat_ms: int
    election_ms: int
    compaction_retention: str
    local_endpoint: str  # for etcdctl on the host itself
    # Membership (see membership.py), decided from the hosts' facts:
    peer_url: str
    members: tuple[str, ...]  # the inventory's members, by name (the cluster must end up exactly these)
    joins: bool  # a cluster is running and this host has no data: it joins through the members API
    others: str  # the running voting members' client URLs (mesh), comma-separated: where a joining host asks
    removes: tuple[str, ...]  # members the cluster lists that the inventory no longer has; this host removes
    # them (one surviving member does: the first, in name order, that is running with data)


def data_dir(plan: EtcdPlan) -> str:
    return f"/var/lib/etcd/{plan.token}"


def etcd_config(ctx: ConfigContext, host: Host) -> EtcdHostConfig:
    plan = etcd_plan(ctx.placement)
    if host.name not in {m.name for m in plan.members}:
        raise ValueError(f"{host.name} is not an etcd member")
    peer = f"http://{host.mesh_address}:{plan.peer_port}"
    names = tuple(m.name for m in plan.members)
    data = data_dir(plan)
    running = running_members(ctx, names)
    listed = {m.name for m in running or ()}
    stale = tuple(sorted(n for n in listed if n and n not in names))
    remover = next((n for n in names if n in listed and has_data(ctx.fact(n, DATA_FACT), data)), None)
    client = f"http://{host.mesh_address}:{plan.client_port}"
    local = f"http://127.0.0.1:{plan.client_port}"
    return EtcdHostConfig(
        name=host.name,
        mesh_address=host.mesh_address,
        client_port=plan.client_port,
        peer_port=plan.peer_port,
        token=plan.token,
        # Not Debian's /var/lib/etcd/default: the package starts a single-node etcd there on install, and a
        # member that finds that data would come up as that one-node cluster instead of joining ours.
        data_dir=data,
        initial_cluster=plan.initial_cluster,
        listen_peer_urls=peer,
        listen_client_urls=f"{client},{local}",
        advertise_peer_urls=peer,
        advertise_client_urls=client,
        heartbeat_ms=HEARTBEAT_MS,
        election_ms=ELECTION_MS,
        compaction_retention=COMPACTION_RETENTION,
        local_endpoint=local,
        peer_url=peer,
        members=names,
        joins=running is not None and has_data(ctx.fact(host.name, DATA_FACT), data) is False,
        # Asked by a joining host: the running voting members (a learner, e.g. another host joining in the same
        # apply, answers no members-API call: "rpc not supported for learner").
        others=",".join(f"http://{ctx.inv.host(m.name).mesh_address}:{plan.client_port}" for m in running or ()
                        if m.name in names and m.name != host.name and not m.learner),
        removes=stale if remover == host.name else (),
    )


def running_members(ctx: ConfigContext, names: tuple[str, ...]) -> tuple[RunningMember, ...] | None:
    """The cluster's member list as a member of ours reports it (a host's local etcd counts only if it lists
    that host itself: Debian's package starts a one-member etcd of its own on install); None: none running."""
    for name in names:
        members = parse_members(ctx.fact(name, MEMBERS_FACT))
        if members is not None and any(m.name == name for m in members):
            return members
    return None
