"""What one role wants on one host: packages, directories, files (rendered), services, waits.

Services (`deploykit/services/<service>/state.py`) build a `RoleState` from their typed per-host config; the online plan
compares it with facts gathered from the host, and the executor applies exactly the differences.
Everything here is data: no SSH, no pyinfra.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ManagedFile:
    path: str
    content: str
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    # Shell command that checks the new file before it replaces the live one; `{path}` is the candidate
    # file's path (e.g. "haproxy -c -f {path}"). A failing check leaves the live file untouched.
    validate: str | None = None
    # Seed files are rewritten at run time by their service (Redis, Sentinel): deploykit writes one only
    # when it is absent (a new or wiped host) or is not one it wrote (a package's default: it lacks the seed's
    # first line, which the service keeps), never to undo the service's own edits (e.g. a failover's new
    # `replicaof`). Later changes of what it holds reach the running service through its own commands.
    seed: bool = False
    # Units to restart (or reload, see Unit.reload) when this file changes.
    notify: tuple[str, ...] = ()
    # Shell command run once after a changed file is in place, before notified services restart
    # (e.g. load sysctls, `systemctl daemon-reload` is automatic for files under /etc/systemd).
    after_change: str | None = None
    # Written before the role's packages are installed (and before its after-change commands): a file a
    # package's own install reads, e.g. createcluster.d for postgresql-15. Its directory is created if needed.
    before_install: bool = False


@dataclass(frozen=True, slots=True)
class Directory:
    path: str
    mode: str = "0755"
    owner: str = "root"
    group: str = "root"


@dataclass(frozen=True, slots=True)
class Unit:
    """A systemd unit a role wants enabled/running (not to be confused with a deploykit service)."""

    name: str  # systemd unit, e.g. "etcd" or "patroni"
    enabled: bool = True
    running: bool = True
    reload: bool = False  # on a notified change, `systemctl reload` instead of restart


@dataclass(frozen=True, slots=True)
class Wait:
    """A command run after the role's services are (re)started, retried until it succeeds or times out."""

    description: str  # "etcd member healthy"
    command: str  # shell command; exit 0 means ready
    timeout_s: int = 60


@dataclass(frozen=True, slots=True)
class RoleState:
    role: str  # "etcd", "db", ...
    packages: tuple[str, ...] = ()
    directories: tuple[Directory, ...] = ()
    files: tuple[ManagedFile, ...] = ()
    services: tuple[Unit, ...] = ()
    masked: tuple[str, ...] = ()  # units that must not run (e.g. Debian's default postgresql cluster)
    waits: tuple[Wait, ...] = field(default_factory=tuple)
    # Run on ONE host of the role per deploy that changes it, after its files are in place and before its
    # services restart (e.g. the app's schema migrations). Must be idempotent.
    once: str | None = None
    # Run on EVERY host whose role changes, after its files are in place and before its units are started,
    # stopped or restarted (e.g. hand a Redis master's role over before the server stops). Idempotent.
    prepare: str | None = None
    # Where the host goes in its phase: lower first (ONE_AT_A_TIME: then by name, in natural order; PARALLEL:
    # each rank a group of its own). E.g. the current Redis master last, the Patroni leader first.
    rollout_order: int = 0
    # The role is being taken off the host (Service.retire): applied before every phase, in reverse phase order.
    retiring: bool = False
