"""Desired state vs. probed facts: exactly what must change on one host, phase by phase. Pure."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field

from deploykit.execute.probe import HostFacts, ProbeSpec, sha256
from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait


@dataclass(frozen=True)
class FileChange:
    file: ManagedFile
    action: str  # create | update | metadata
    diff: str  # unified diff, secrets redacted ("" for metadata-only changes)

    @property
    def content_changes(self) -> bool:
        return self.action in ("create", "update")


@dataclass(frozen=True)
class ServiceChange:
    name: str
    actions: tuple[str, ...]  # in order: unmask, enable, disable, start, stop, restart, reload


@dataclass(frozen=True)
class RoleChanges:
    role: str
    packages: tuple[str, ...] = ()  # to install
    masks: tuple[str, ...] = ()
    directories: tuple[Directory, ...] = ()
    files: tuple[FileChange, ...] = ()
    services: tuple[ServiceChange, ...] = ()
    waits: tuple[Wait, ...] = ()
    once: str | None = None
    units: tuple[str, ...] = ()  # every systemd unit the role runs (changed or not)
    prepare: str | None = None  # RoleState.prepare, when the role changes
    rollout_order: int = 0
    retiring: bool = False

    @property
    def not_serving(self) -> bool:
        """None of the role's units runs yet (a first deploy, a host new to the inventory): a rollout has
        nothing to drain from it and no running capacity to lose by changing it."""
        starting = {s.name for s in self.services if "start" in s.actions}
        return bool(self.units) and set(self.units) <= starting

    @property
    def empty(self) -> bool:
        return not (self.packages or self.masks or self.directories or self.files or self.services)

    def count(self) -> int:
        return len(self.packages) + len(self.masks) + len(self.directories) + len(self.files) + len(self.services)


@dataclass
class HostPlan:
    host: str
    roles: list[RoleChanges] = field(default_factory=list)
    fingerprint: str = ""
    desired_hash: str = ""

    @property
    def changed(self) -> bool:
        return any(not r.empty for r in self.roles)

    def count(self) -> int:
        return sum(r.count() for r in self.roles)


def probe_spec(states: list[RoleState], facts: tuple[tuple[str, str], ...] = ()) -> ProbeSpec:
    files, dirs, pkgs, units = [], [], [], []
    for s in states:
        files += [f.path for f in s.files]
        dirs += [d.path for d in s.directories]
        pkgs += list(s.packages)
        units += [sv.name for sv in s.services] + list(s.masked)
    uniq = lambda xs: tuple(dict.fromkeys(xs))  # noqa: E731
    return ProbeSpec(uniq(files), uniq(dirs), uniq(pkgs), uniq(units), facts)


def desired_hash(states: list[RoleState]) -> str:
    """A hash of everything deploykit wants on the host (content included, never printed)."""
    return sha256(repr([(s.role, s.packages, s.directories, s.files, s.services, s.masked, s.once, s.prepare,
                         s.retiring) for s in states]))


def diff_host(host: str, states: list[RoleState], facts: HostFacts, redact: Callable[[str], str]) -> HostPlan:
    plan = HostPlan(host, fingerprint=facts.fingerprint(), desired_hash=desired_hash(states))
    seen_pkgs: set[str] = set()
    for state in states:
        pkgs = tuple(p for p in state.packages if not facts.packages.get(p, False) and p not in seen_pkgs)
        seen_pkgs.update(state.packages)
        masks = tuple(u for u in state.masked if facts.units.get(u, ("absent", ""))[0] != "masked")
        dirs = tuple(d for d in state.directories if _dir_differs(d, facts.directories.get(d.path)))
        files = tuple(c for c in (_file_change(f, facts, redact) for f in state.files) if c is not None)
        services = _service_changes(state, files, facts)
        changed = bool(pkgs or masks or dirs or files or services)  # waits and `once` only follow a change
        plan.roles.append(RoleChanges(state.role, pkgs, masks, dirs, files, services,
                                      state.waits if changed else (), state.once if changed else None,
                                      tuple(u.name for u in state.services if u.running),
                                      state.prepare if changed else None, state.rollout_order, state.retiring))
    return plan


def _dir_differs(d: Directory, fact: tuple[int, str, str] | None) -> bool:
    return fact is None or fact != (int(d.mode, 8), d.owner, d.group)


def _file_change(f: ManagedFile, facts: HostFacts, redact: Callable[[str], str]) -> FileChange | None:
    live = facts.files.get(f.path)
    if live is None:
        return FileChange(f, "create", _unified(f.path, "", f.content, redact))
    if f.seed and not _seeded(live.content, f.content):
        old = live.content.decode("utf-8", "replace")  # the package's default, never seeded by deploykit
        return FileChange(f, "update", _unified(f.path, old, f.content, redact))
    if not f.seed and live.content != f.content.encode():
        old = live.content.decode("utf-8", "replace")
        return FileChange(f, "update", _unified(f.path, old, f.content, redact))
    if (live.mode, live.owner, live.group) != (int(f.mode, 8), f.owner, f.group):
        return FileChange(f, "metadata", f"{f.path}: mode/owner {oct(live.mode)[2:]} {live.owner}:{live.group} "
                                         f"-> {f.mode} {f.owner}:{f.group}")
    return None


def _seeded(live: bytes, seed: str) -> bool:
    """Whether a live seed file is one deploykit wrote: it still holds the seed's first line (Redis and Sentinel
    keep comments when they rewrite their files), which a package's default file does not."""
    first = seed.split("\n", 1)[0].encode()
    return bool(first) and first in live.split(b"\n")


def _unified(path: str, old: str, new: str, redact: Callable[[str], str]) -> str:
    lines = difflib.unified_diff(redact(old).splitlines(keepends=True), redact(new).splitlines(keepends=True),
                                 fromfile=f"{path} (live)" if old else "/dev/null", tofile=f"{path} (planned)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _service_changes(state: RoleState, files: tuple[FileChange, ...], facts: HostFacts) -> tuple[ServiceChange, ...]:
    notified = {name for c in files if c.content_changes for name in c.file.notify}
    out = []
    for svc in state.services:
        acts = _service_actions(svc, facts.units.get(svc.name, ("absent", "inactive")), svc.name in notified)
        if acts:
            out.append(ServiceChange(svc.name, acts))
    return tuple(out)


def _service_actions(svc: Unit, fact: tuple[str, str], notified: bool) -> tuple[str, ...]:
    enabled, active = fact
    acts: list[str] = []
    if enabled == "masked":
        acts.append("unmask")
    if svc.enabled and enabled not in ("enabled", "static", "alias", "generated", "enabled-runtime"):
        acts.append("enable")
    if not svc.enabled and enabled == "enabled":
        acts.append("disable")
    running = active == "active"
    if svc.running and not running:
        acts.append("start")
    elif not svc.running and running:
        acts.append("stop")
    elif svc.running and running and notified:
        acts.append("reload" if svc.reload else "restart")
    return tuple(acts)
