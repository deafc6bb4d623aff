"""An etcd member: Patroni's leader lock (DCS)."""

from __future__ import annotations

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.etcd.config import EtcdHostConfig
from deploykit.services.render import render

PACKAGES = ("etcd-server", "etcd-client")


def health_command(cfg: EtcdHostConfig) -> str:
    """Healthy means this member answers and the cluster has quorum (the check commits a read through raft)."""
    return f"ETCDCTL_API=3 etcdctl --endpoints={cfg.local_endpoint} --command-timeout=5s endpoint health"


def desired(cfg: EtcdHostConfig) -> RoleState:
    return RoleState(
        role="etcd",
        packages=PACKAGES,
        directories=(Directory(cfg.data_dir, mode="0700", owner="etcd", group="etcd"),),
        files=(ManagedFile("/etc/default/etcd", render("etcd/etcd.env.j2", cfg=cfg), notify=("etcd",)),),
        services=(Unit("etcd", enabled=True, running=True),),
        waits=(Wait(f"etcd member {cfg.name} healthy", health_command(cfg), timeout_s=120),),
    )
