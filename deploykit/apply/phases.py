"""Which roles run in which order, and the desired state of every host (pure: no SSH).

Phases run in dependency order; within a phase, hosts run in parallel. `base` runs on every host.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.hostconfig import ConfigContext
from deploykit.plan.placement import Placement
from deploykit.secret import Secret


@dataclass(frozen=True)
class Phase:
    role: str  # inventory role ("base" is every host)
    config: str  # "module:function" computing the host config
    desired: str  # "module:function" turning it into a RoleState


PHASES: tuple[Phase, ...] = (
    Phase("base", "deploykit.plan.hostconfig.base:base_config", "roles.base:desired"),
    Phase("etcd", "deploykit.plan.hostconfig.etcd:etcd_config", "roles.etcd:desired"),
    Phase("db", "deploykit.plan.hostconfig.db:db_config", "roles.db:desired"),
    Phase("cache", "deploykit.plan.hostconfig.cache:cache_config", "roles.cache:desired"),
    Phase("lb", "deploykit.plan.hostconfig.lb:lb_config", "roles.lb:desired"),
    Phase("app", "deploykit.plan.hostconfig.app:app_config", "roles.app:desired_app"),
    Phase("worker", "deploykit.plan.hostconfig.app:app_config", "roles.app:desired_worker"),
)
PHASE_NAMES: tuple[str, ...] = tuple(p.role for p in PHASES)


def _resolve(ref: str) -> Callable[..., Any] | None:
    module, attr = ref.split(":")
    try:
        return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):
        return None


Resolved = tuple[Phase, Callable[..., Any], Callable[..., Any]]


def available_phases(names: tuple[str, ...] | None = None) -> list[Resolved]:
    out = []
    for phase in PHASES:
        if names is not None and phase.role not in names:
            continue
        config, desired = _resolve(phase.config), _resolve(phase.desired)
        if config is not None and desired is not None:
            out.append((phase, config, desired))
    return out


def missing_phases() -> list[str]:
    have = {p.role for p, _, _ in available_phases()}
    return [p.role for p in PHASES if p.role not in have]


def host_runs(phase: Phase, host: Host) -> bool:
    return phase.role == "base" or host.has(phase.role)


def desired_states(inv: Inventory, placement: Placement, secret: Callable[[str], Secret],
                   hosts: list[Host] | None = None,
                   phases: tuple[str, ...] | None = None) -> dict[str, list[RoleState]]:
    """Host name -> its RoleStates in phase order."""
    ctx = ConfigContext(inv, placement, secret)
    out: dict[str, list[RoleState]] = {}
    chosen = available_phases(phases)
    for host in hosts if hosts is not None else inv.hosts:
        states = []
        for phase, config_fn, desired_fn in chosen:
            if host_runs(phase, host):
                state = desired_fn(config_fn(ctx, host))
                if state.role != phase.role:  # roles name their state after themselves; phases key on it
                    state = RoleState(phase.role, state.packages, state.directories, state.files, state.services,
                                      state.masked, state.waits, state.once)
                states.append(state)
        out[host.name] = states
    return out
