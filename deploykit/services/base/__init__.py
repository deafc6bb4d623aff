"""base: every host — sshd hardening, the default-deny nftables firewall, kernel settings, /etc/hosts."""

from __future__ import annotations

from deploykit.inventory.model import Host
from deploykit.plan.desired import RoleState
from deploykit.services.base.config import NAME, BaseHostConfig, base_config
from deploykit.services.base.state import PACKAGES, desired
from deploykit.services.contract import ConfigContext, Service


class Base(Service):
    name = NAME
    every_host = True
    packages = PACKAGES

    def config(self, ctx: ConfigContext, host: Host) -> BaseHostConfig:
        return base_config(ctx, host)

    def desired(self, cfg: BaseHostConfig) -> RoleState:
        return desired(cfg)


SERVICE = Base()
