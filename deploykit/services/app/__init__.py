"""app and worker: the app's code, its env file and systemd units (gunicorn; the worker process).

Two services share this package: `app` (web processes behind HAProxy, released host by host, drained first)
and `worker` (background processes on worker hosts). A host with both roles gets its whole state from `app`.
"""

from __future__ import annotations

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import HostGroup, Placement, host_group
from deploykit.plan.verdict import Verdict
from deploykit.services.app.config import SECRET_KEY, AppHostConfig, app_config
from deploykit.services.app.state import PACKAGES, desired_app, desired_worker
from deploykit.services.app.tier import judge_app, judge_worker
from deploykit.services.contract import (
    Backend,
    ConfigContext,
    FirewallRule,
    Frontend,
    PlacementContext,
    Rollout,
    Service,
    TierContext,
)
from deploykit.services.ports import mesh_addresses

BACKEND = "app"  # the load balancers' frontend and backend serving the app


def app_hosts(p: Placement) -> HostGroup:
    return p.part("app", HostGroup)


def worker_hosts(p: Placement) -> HostGroup:
    return p.part("worker", HostGroup)


class App(Service):
    name = "app"
    rollout = Rollout.ROLLING
    drain_backend = BACKEND
    tier_column = 20
    secrets = (SECRET_KEY,)
    packages = PACKAGES

    def place(self, ctx: PlacementContext) -> HostGroup:
        return host_group(ctx.inv.with_role(self.name))

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_app(ctx, app_hosts(ctx.placement))

    def describe_data(self, part: object) -> object:
        assert isinstance(part, HostGroup)
        return [m.name for m in part.members]

    def frontends(self, inv: Inventory, site: str) -> tuple[Frontend, ...]:
        apps, svc = inv.with_role(self.name), inv.services.app
        if not apps:
            return ()
        # The site's own app hosts first; other sites' only as backup (all of them when the site has none).
        local = any(h.site == site for h in apps)
        backends = tuple(Backend(h.name, h.mesh_address, svc.port, backup=local and h.site != site) for h in apps)
        return (Frontend(BACKEND, inv.services.lb.http_port, "http", f"GET {svc.health}", backends,
                         check_path=svc.health),)

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        # HAProxy's app backends and health checks, from the load balancers' mesh addresses.
        inv = ctx.inv
        return (FirewallRule("app", "tcp", inv.services.app.port, mesh_addresses(inv, "lb"), inv.mesh.interface),)

    def config(self, ctx: ConfigContext, host: Host) -> AppHostConfig:
        return app_config(ctx, host)

    def desired(self, cfg: AppHostConfig) -> RoleState:
        return desired_app(cfg)

    def batch_size(self, inv: Inventory) -> int:
        return inv.services.app.batch_count(len(inv.with_role(self.name)))


class Worker(Service):
    name = "worker"
    tier_column = 30
    packages = PACKAGES

    def place(self, ctx: PlacementContext) -> HostGroup:
        return host_group(ctx.inv.with_role(self.name))

    def judge(self, ctx: TierContext) -> Verdict | None:
        return judge_worker(ctx, worker_hosts(ctx.placement))

    def describe_data(self, part: object) -> object:
        assert isinstance(part, HostGroup)
        return [m.name for m in part.members]

    def config(self, ctx: ConfigContext, host: Host) -> AppHostConfig:
        return app_config(ctx, host)

    def desired(self, cfg: AppHostConfig) -> RoleState:
        return desired_worker(cfg)


APP = App()
WORKER = Worker()
