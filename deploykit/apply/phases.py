"""The desired state of every host: each registered service, in phase order, on the hosts it runs on.

Pure (no SSH). Phases run in the services' registration order; within a phase, hosts run as the service's
rollout says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.secret import Secret
from deploykit.services import SERVICES
from deploykit.services.contract import ConfigContext, Service


def desired_states(inv: Inventory, placement: Placement, secret: Callable[[str], Secret],
                   hosts: list[Host] | None = None, phases: tuple[str, ...] | None = None,
                   services: tuple[Service, ...] = SERVICES,
                   facts: Mapping[str, Mapping[str, str]] | None = None,
                   previous: Callable[[str], Secret | None] | None = None) -> dict[str, list[RoleState]]:
    """Host name -> its RoleStates in phase order (each named after its service); `facts`: the host facts
    known (`ConfigContext.facts`); `previous`: the secrets' values before an unfinished rotation."""
    ctx = ConfigContext(inv, placement, secret, services, facts or {}, previous or (lambda name: None))
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


def fact_scripts(host: Host, ensure: bool, services: tuple[Service, ...] = SERVICES) -> tuple[tuple[str, str], ...]:
    """(name, script) of every fact the services on `host` read: their `ensure` scripts when `ensure`."""
    return tuple((f.name, f.ensure if ensure and f.ensure else f.read)
                 for s in services if s.runs_on(host) for f in s.host_facts)


def stored_facts(services: tuple[Service, ...] = SERVICES) -> frozenset[str]:
    """The names of the facts kept between runs."""
    return frozenset(f.name for s in services for f in s.host_facts if f.stored)
