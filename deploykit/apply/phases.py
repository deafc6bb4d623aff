"""The desired state of every host: each registered service, in phase order, on the hosts it runs on.

Pure (no SSH). Phases run in the services' registration order; within a phase, hosts run as the service's
rollout says.
"""

from __future__ import annotations

from collections.abc import Callable

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.secret import Secret
from deploykit.services import SERVICES
from deploykit.services.contract import ConfigContext, Service


def desired_states(inv: Inventory, placement: Placement, secret: Callable[[str], Secret],
                   hosts: list[Host] | None = None, phases: tuple[str, ...] | None = None,
                   services: tuple[Service, ...] = SERVICES) -> dict[str, list[RoleState]]:
    """Host name -> its RoleStates in phase order (each named after its service)."""
    ctx = ConfigContext(inv, placement, secret, services)
    chosen = [s for s in services if phases is None or s.name in phases]
    out: dict[str, list[RoleState]] = {}
    for host in hosts if hosts is not None else inv.hosts:
        states = []
        for service in chosen:
            if service.runs_on(host):
                state = service.state(ctx, host)
                if state.role != service.name:
                    raise ValueError(f"service {service.name} returned the state of {state.role!r} for {host.name}")
                states.append(state)
        out[host.name] = states
    return out
