"""The registered services, in phase order (dependency order: a phase may rely on every earlier one).

Each line registers one service from its package (see docs/architecture.md, "How to add a service"). Imports
are explicit: a service that fails to import is an error at start-up, never a silently skipped phase.
"""

from __future__ import annotations

from deploykit.services import app, backup, base, cache, db, dns, etcd, lb, mesh, pooler
from deploykit.services.contract import Service

SERVICES: tuple[Service, ...] = (
    base.SERVICE,
    mesh.SERVICE,
    etcd.SERVICE,
    db.SERVICE,
    pooler.SERVICE,
    backup.SERVICE,
    cache.SERVICE,
    lb.SERVICE,
    app.APP,
    app.WORKER,
    dns.SERVICE,
)


def inventory_roles(services: tuple[Service, ...] = SERVICES) -> tuple[str, ...]:
    """The roles a host may have, in the order its roles are listed (the resilience table's: edge inward)."""
    return tuple(s.name for s in sorted(services, key=lambda s: s.tier_column) if s.role is not None)


def role_names(services: tuple[Service, ...] = SERVICES) -> tuple[str, ...]:
    """The inventory roles the services run on, in phase order (services without a role of their own left out)."""
    return tuple(s.name for s in services if s.role is not None)


def service_named(name: str, services: tuple[Service, ...] = SERVICES) -> Service:
    for s in services:
        if s.name == name:
            return s
    raise KeyError(name)
