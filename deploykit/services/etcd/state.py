"""An etcd member: Patroni's leader lock (DCS)."""

from __future__ import annotations

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.etcd.config import EtcdHostConfig
from deploykit.services.etcd.membership import (
    BOOTSTRAP_ENV,
    JOIN_ENV,
    JOIN_SCRIPT,
    MEMBERS_FILE,
    REMOVE_SCRIPT,
    join_script,
    promote_command,
    remove_others_script,
)
from deploykit.services.render import render

PACKAGES = ("etcd-server", "etcd-client")


def health_command(cfg: EtcdHostConfig) -> str:
    """Healthy means this member answers and the cluster has quorum (the check commits a read through raft)."""
    return f"ETCDCTL_API=3 etcdctl --endpoints={cfg.local_endpoint} --command-timeout=5s endpoint health"


DROPIN = "/etc/systemd/system/etcd.service.d/deploykit.conf"


def desired(cfg: EtcdHostConfig) -> RoleState:
    files = [
        # What a restart must apply: addresses, timing.
        ManagedFile("/etc/default/etcd", render("etcd/etcd.env.j2", cfg=cfg), notify=("etcd",)),
        ManagedFile(DROPIN, render("etcd/dropin.conf.j2", bootstrap=BOOTSTRAP_ENV, join=JOIN_ENV)),
        # Read on the first start only: a membership change rewrites it and restarts nothing.
        ManagedFile(BOOTSTRAP_ENV, render("etcd/bootstrap.env.j2", cfg=cfg)),
    ]
    if cfg.joins:
        files.append(ManagedFile(JOIN_SCRIPT, join_script(cfg.name, cfg.peer_url, cfg.others, cfg.data_dir),
                                 mode="0755", after_change=JOIN_SCRIPT))
    members = "".join(f"{n}\n" for n in cfg.members)
    if cfg.removes:
        files.append(ManagedFile(REMOVE_SCRIPT, remove_others_script(cfg.local_endpoint), mode="0755"))
        removing = "".join(f"# removing: {n}\n" for n in cfg.removes)
        files.append(ManagedFile(MEMBERS_FILE, removing + members, after_change=REMOVE_SCRIPT))
    else:
        files.append(ManagedFile(MEMBERS_FILE, members))
    healthy = Wait(f"etcd member {cfg.name} healthy", health_command(cfg), timeout_s=120)
    if cfg.joins:
        healthy = Wait(f"etcd member {cfg.name} caught up, promoted and healthy",
                       promote_command(cfg.name, cfg.others, cfg.local_endpoint), timeout_s=300)
    return RoleState(
        role="etcd",
        packages=PACKAGES,
        directories=(Directory(cfg.data_dir, mode="0700", owner="etcd", group="etcd"),),
        files=tuple(files),
        services=(Unit("etcd", enabled=True, running=True),),
        waits=(healthy,),
    )
