"""The online plan: connect, probe every host once, diff against the desired state."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from deploykit.apply.phases import desired_states, fact_scripts, stored_facts
from deploykit.execute import executor
from deploykit.execute.diff import HostPlan, diff_host, probe_spec
from deploykit.execute.probe import HostFacts, ProbeSpec
from deploykit.facts_store import load_facts, merge_facts, save_facts
from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState
from deploykit.plan.placement import Placement
from deploykit.secrets_store import SecretStore
from deploykit.services import SERVICES
from deploykit.services.contract import ConfigContext


@dataclass
class OnlinePlan:
    inv: Inventory
    inventory_sha256: str
    hosts: dict[str, HostPlan] = field(default_factory=dict)  # probed hosts, in inventory order
    unreachable: dict[str, str] = field(default_factory=dict)
    probe_failed: dict[str, str] = field(default_factory=dict)
    limit: tuple[str, ...] = ()
    findings: dict[str, list[str]] = field(default_factory=dict)  # host -> problems its facts show

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
              on_connect: Callable[[str, bool], None] | None = None, ensure_facts: bool = False,
              ) -> tuple[OnlinePlan, executor.Session]:
    """Plan for `hosts` (the caller disconnects the returned session).

    One probe per host reads its state and the services' host facts (`ensure_facts`: making those that can
    be made, for a plan that will be applied). The states of services that read facts are computed again
    with what was read (file paths never depend on facts, so the probe's file list is right either way).
    """
    keep = stored_facts()
    stored = load_facts(inv)
    states = desired_states(inv, placement, store.get, hosts, facts=stored, previous=store.previous)
    plan = OnlinePlan(inv, inventory_sha256(inv), limit=limit)
    specs = {h.name: _spec(states[h.name], h, ensure_facts) for h in hosts}
    # each host is probed as soon as it is connected (the slowest connections overlap the first probes)
    session = executor.connect(hosts, accept_new_host_keys=accept_new_host_keys, progress=on_connect, probes=specs)
    plan.unreachable = dict(session.unreachable)
    probed, errors = executor.probe(session, specs)
    plan.probe_failed = errors
    for name, hf in list(probed.items()):
        if hf.fact_errors:
            plan.probe_failed[name] = "; ".join(f"{n}: {m}" for n, m in sorted(hf.fact_errors.items()))
            del probed[name]
    known = merge_facts(stored, {n: hf.facts for n, hf in probed.items()}, keep)
    save_facts(inv, known, keep)
    for hf in probed.values():  # a saved plan goes stale when the hosts change, not when a moment passes
        hf.facts = {k: v for k, v in hf.facts.items() if k in keep}
    _with_facts(inv, placement, store, [h for h in hosts if h.name in probed], states, known)
    redact = store.redactor()
    ctx = ConfigContext(inv, placement, store.get, SERVICES, known, store.previous)
    for h in hosts:
        if h.name in probed:
            states[h.name] = with_retirements(ctx, h, states[h.name], probed[h.name])
            plan.hosts[h.name] = diff_host(h.name, states[h.name], probed[h.name], redact)
            found = [f"{s.name}: {p}" for s in SERVICES if s.runs_on(h) for p in s.check(ctx, h)]
            if found:
                plan.findings[h.name] = found
    return plan, session


def _spec(states: list[RoleState], host: Host, ensure_facts: bool) -> ProbeSpec:
    """The probe of `host`: its desired state's items, its services' facts, and every package a service that
    reads facts may want (which of them it wants is known only once the facts are read)."""
    spec = probe_spec(states, fact_scripts(host, ensure_facts))
    maybe = [p for s in SERVICES if s.host_facts and s.runs_on(host) for p in s.packages]
    leaving = [u for s in SERVICES if not s.runs_on(host) for u in s.retire_units]
    return replace(spec, packages=tuple(dict.fromkeys((*spec.packages, *maybe))),
                   units=tuple(dict.fromkeys((*spec.units, *leaving))))


def with_retirements(ctx: ConfigContext, host: Host, states: list[RoleState], facts: HostFacts) -> list[RoleState]:
    """`states` (phase order) with the retirement of every role `host` no longer holds but still runs: one of
    the service's `retire_units` is active or enabled there (Service.retire)."""
    by_role = {s.role: s for s in states}
    out = []
    for service in SERVICES:
        if service.name in by_role:
            out.append(by_role[service.name])
        elif not service.runs_on(host) and any(_live(facts.units.get(u)) for u in service.retire_units):
            out.append(service.retire(ctx, host))
    return out


def _live(unit: tuple[str, str] | None) -> bool:
    return unit is not None and (unit[1] == "active" or unit[0] == "enabled")


def _with_facts(inv: Inventory, placement: Placement, store: SecretStore, hosts: list[Host],
                states: dict[str, list[RoleState]], known: dict[str, dict[str, str]]) -> None:
    """Recompute, in `states`, the states of the services that read host facts (their own, or others' named in
    `reads_facts`), with the facts `known`."""
    readers = tuple(s.name for s in SERVICES if s.host_facts or s.reads_facts)
    if not readers or not hosts:
        return
    again = desired_states(inv, placement, store.get, hosts, phases=readers, facts=known, previous=store.previous)
    for name, fresh in again.items():
        by_role = {s.role: s for s in fresh}
        states[name] = [by_role.get(s.role, s) for s in states[name]]


__all__ = ["HostFacts", "OnlinePlan", "make_plan"]
