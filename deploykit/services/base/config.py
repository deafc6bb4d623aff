"""What every host gets: the default-deny firewall, kernel settings and /etc/hosts.

The firewall is default-deny inbound. SSH is open; every other port is opened by the service that listens on
it (`Service.firewall`), only on a host that runs it and only to the hosts that talk to it, so adding an app
host opens PostgreSQL's frontend on the load balancers to it at the next deploy. Kernel settings likewise
come from the services a host runs (`Service.sysctls`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Host
from deploykit.services.contract import ConfigContext, FirewallRule, Sysctl

NAME = "base"
__all__ = ["BaseHostConfig", "FirewallRule", "HostsEntry", "Sysctl", "base_config", "firewall_rules", "sysctls"]


@dataclass(frozen=True, slots=True)
class HostsEntry:
    address: IPv4Address
    name: str


@dataclass(frozen=True, slots=True)
class BaseHostConfig:
    host: str
    ssh_port: int
    firewall: tuple[FirewallRule, ...]
    sysctls: tuple[Sysctl, ...]  # sorted by key
    hosts_entries: tuple[HostsEntry, ...]  # every inventory host, by name


def firewall_rules(ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
    """SSH from anywhere, then each service's ports on this host, in phase order (a rule nobody may use is
    left out)."""
    rules = [FirewallRule("ssh", "tcp", host.ssh.port, None)]
    for service in ctx.services:
        if service.name != NAME and service.runs_on(host):
            rules += [r for r in service.firewall(ctx, host) if r.sources is None or r.sources]
    return tuple(rules)


def sysctls(ctx: ConfigContext, host: Host) -> tuple[Sysctl, ...]:
    wanted = {"net.core.somaxconn": Sysctl("net.core.somaxconn", "4096",
                                           "listen backlog for HAProxy, gunicorn, PostgreSQL")}
    for service in ctx.services:
        if service.name != NAME and service.runs_on(host):
            for s in service.sysctls(host):
                if s.key in wanted and wanted[s.key].value != s.value:
                    raise ValueError(f"{host.name}: services disagree on {s.key} ({wanted[s.key].value} vs {s.value})")
                wanted[s.key] = s
    return tuple(sorted(wanted.values(), key=lambda s: s.key))


def base_config(ctx: ConfigContext, host: Host) -> BaseHostConfig:
    inv = ctx.inv
    return BaseHostConfig(
        host=host.name,
        ssh_port=host.ssh.port,
        firewall=firewall_rules(ctx, host),
        sysctls=sysctls(ctx, host),
        hosts_entries=tuple(HostsEntry(h.address, h.name) for h in inv.hosts),
    )
