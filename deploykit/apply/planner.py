"""The online plan: connect, probe every host once, diff against the desired state."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from deploykit.apply.phases import desired_states
from deploykit.execute import executor
from deploykit.execute.diff import HostPlan, diff_host, probe_spec
from deploykit.inventory.model import Host, Inventory
from deploykit.plan.placement import Placement
from deploykit.secrets_store import SecretStore


@dataclass
class OnlinePlan:
    inv: Inventory
    inventory_sha256: str
    hosts: dict[str, HostPlan] = field(default_factory=dict)  # probed hosts, in inventory order
    unreachable: dict[str, str] = field(default_factory=dict)
    probe_failed: dict[str, str] = field(default_factory=dict)
    limit: tuple[str, ...] = ()

    @property
    def changed(self) -> list[HostPlan]:
        return [p for p in self.hosts.values() if p.changed]

    @property
    def has_errors(self) -> bool:
        return bool(self.unreachable or self.probe_failed)

    def summary(self) -> str:
        total = len(self.hosts) + len(self.unreachable) + len(self.probe_failed)
        parts = [f"{len(self.changed)} to change", f"{len(self.hosts) - len(self.changed)} unchanged"]
        if self.unreachable:
            parts.append(f"{len(self.unreachable)} unreachable")
        if self.probe_failed:
            parts.append(f"{len(self.probe_failed)} failed")
        return f"{total} hosts: " + ", ".join(parts)


def inventory_sha256(inv: Inventory) -> str:
    return hashlib.sha256(inv.path.read_bytes()).hexdigest()


def make_plan(inv: Inventory, placement: Placement, store: SecretStore, hosts: list[Host], *,
              accept_new_host_keys: bool = False, limit: tuple[str, ...] = (),
              on_connect: Callable[[str, bool], None] | None = None,
              ) -> tuple[OnlinePlan, executor.Session]:
    """Plan for `hosts` (the caller disconnects the returned session)."""
    states = desired_states(inv, placement, store.get, hosts)
    plan = OnlinePlan(inv, inventory_sha256(inv), limit=limit)
    session = executor.connect(hosts, accept_new_host_keys=accept_new_host_keys, progress=on_connect)
    plan.unreachable = dict(session.unreachable)
    specs = {h.name: probe_spec(states[h.name]) for h in hosts if h.name not in session.unreachable}
    facts, errors = executor.probe(session, specs)
    plan.probe_failed = errors
    redact = store.redactor()
    for h in hosts:
        if h.name in facts:
            plan.hosts[h.name] = diff_host(h.name, states[h.name], facts[h.name], redact)
    return plan, session
