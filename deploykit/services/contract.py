"""What a service is: the one contract every service package implements and the shared machinery reads.

A service package (`deploykit/services/<name>/`) holds everything deploykit knows about one service: its part
of the placement, its per-host config (pure, typed), its desired state and templates, its tier rule (shared by
the resilience proof and the apply's abort rule), its rollout policy, the secrets it owns, the ports it opens
and to whom, and what it asks the load balancers to serve. It exposes one or more `Service` objects, which
`deploykit/services/__init__.py` registers in phase order, one line each.

The shared machinery (placement, resilience, desired states, the apply runner) only calls the methods below;
it never names a service.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from deploykit.inventory.model import Host, Inventory
from deploykit.plan.desired import RoleState, Unit
from deploykit.plan.placement import Placement
from deploykit.plan.verdict import Verdict
from deploykit.secret import Secret

if TYPE_CHECKING:
    from deploykit.execute.steps import Step

T = TypeVar("T")


class Rollout(str, Enum):
    """How the hosts of one phase change."""

    PARALLEL = "parallel"  # every host at once (bounded by the executor's parallelism)
    ONE_AT_A_TIME = "one-at-a-time"  # one host after the other, each waited for
    # A batch at a time, each batch drained from the load balancers first and put back once healthy; the first
    # batch is one host alone, the only one that runs the service's run-once command (e.g. migrations).
    ROLLING = "rolling"


FIREWALL_PROTOCOLS = ("tcp", "udp", "vrrp")  # what base's nftables template knows how to write


@dataclass(frozen=True, slots=True)
class FirewallRule:
    """An inbound port a service opens on a host, and to whom."""

    description: str
    protocol: str  # "tcp", "udp" or "vrrp" (IP protocol 112, no port)
    port: int | None
    sources: tuple[IPv4Address, ...] | None  # None: from anywhere; never empty (no rule is made then)
    # Only for packets arriving on this interface (the mesh's, for every internal port); None: any.
    interface: str | None = None

    def __post_init__(self) -> None:
        if self.protocol not in FIREWALL_PROTOCOLS:
            raise ValueError(f"firewall rule {self.description!r}: protocol {self.protocol!r} is not one of "
                             f"{', '.join(FIREWALL_PROTOCOLS)}")
        if (self.port is None) != (self.protocol == "vrrp"):
            raise ValueError(f"firewall rule {self.description!r}: a port is needed for tcp and udp, and only there")


@dataclass(frozen=True, slots=True)
class Sysctl:
    key: str
    value: str
    reason: str

    @property
    def proc_path(self) -> str:
        return "/proc/sys/" + self.key.replace(".", "/")


@dataclass(frozen=True, slots=True)
class HostFact:
    """A value a service reads from each host it runs on before its config is computed (e.g. the host's
    public WireGuard key, made on the host so that the private one never leaves it).

    `read` prints the value (one line; nothing: none yet) and changes nothing: every online plan runs it.
    `ensure`, when given, makes the value if it is missing and prints it; it runs instead of `read` when the
    plan is going to be applied (`apply`, `plan --out`), and its failure fails that host's plan with its
    output. Both are POSIX sh, run in the probe's one round trip. A fact a run could not read (the host is
    unreachable or outside --limit) keeps the value last read, stored beside the inventory (facts store).
    """

    name: str  # unique over all services: "<service>-<what>"
    read: str
    ensure: str | None = None
    stored: bool = True  # keep the last value read for runs that cannot read it


@dataclass(frozen=True, slots=True)
class Backend:
    name: str  # the host's name: the load balancer's runtime API addresses the server by it
    address: IPv4Address
    port: int
    backup: bool  # only used when no non-backup server is healthy (e.g. other sites' app hosts)
    check_port: int | None = None  # health check on another port (e.g. Patroni's REST API)


@dataclass(frozen=True, slots=True)
class Frontend:
    """What a service asks every site's load balancers to serve (see `Service.frontends`)."""

    name: str  # frontend and backend name in the load balancer (app, db-primary, ...)
    port: int
    mode: str  # http | tcp
    check: str  # what the health check asks, for people: "GET /healthz", "GET /primary on :8008", ...
    backends: tuple[Backend, ...]
    # How the load balancer checks a server: "http" (GET check_path, on check_port if given) or "redis-master"
    # (AUTH with the secret named check_secret, then `role:master` in INFO replication).
    check_kind: str = "http"
    check_path: str | None = None
    check_secret: str | None = None  # the name of the secret the check authenticates with
    clients: tuple[str, ...] | None = None  # roles whose hosts may connect; None: anyone
    label: str = ""  # for people (firewall comments): "PostgreSQL primary"


@dataclass(frozen=True, slots=True)
class Section:
    """A table of the offline plan's placement report. Sections of several services with the same title
    are one table (e.g. "Data tier": a row per service)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


MAX_LISTED = 6
DATA_TIER_TITLE = "Data tier"
DATA_TIER_COLUMNS = ("tier", "members", "decided")


def listed(items: list[str] | tuple[str, ...]) -> str:
    """A short list for a table cell: the first few names, then how many in all."""
    items = list(items)
    if len(items) <= MAX_LISTED:
        return ", ".join(items) or "-"
    return f"{', '.join(items[:MAX_LISTED - 1])}, ... ({len(items)} in all)"


@dataclass(frozen=True)
class PlacementContext:
    """What a service's `place` sees: the inventory, the parts placed before it, and every service."""

    inv: Inventory
    parts: dict[str, object]
    services: tuple[Service, ...]


@dataclass(frozen=True)
class ConfigContext:
    """What a service's per-host `config` sees. Secrets come from `secret(name)`: generated on first use,
    stored encrypted, the same value every run."""

    inv: Inventory
    placement: Placement
    secret: Callable[[str], Secret]
    services: tuple[Service, ...] = field(default_factory=lambda: _registered())
    # Host name -> fact name -> value (`Service.host_facts`); empty in an offline plan and for hosts never
    # read: a service's config must work without (e.g. leave a peer whose key is unknown out, and say so).
    facts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # A secret's value before a rotation that is not finished (None: none): a service that can accept two
    # values at once (Redis's ACL) accepts this one too, while its clients switch to `secret(name)`.
    previous: Callable[[str], Secret | None] = field(default=lambda name: None)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def fact(self, host: str, name: str) -> str | None:
        """The value of fact `name` on `host`, or None when it is not known."""
        value = self.facts.get(host, {}).get(name)
        return value or None

    def shared(self, key: str, compute: Callable[[], T]) -> T:
        """Compute something once for every host of this run (e.g. reading the app's source directory)."""
        if key not in self._memo:
            self._memo[key] = compute()
        value: T = self._memo[key]
        return value


@dataclass(frozen=True)
class TierContext:
    """What a service's tier rule judges: the stack without the `gone` hosts.

    The resilience proof asks it for every unit of every failure-domain level (`what` = "losing provider
    ovh"); the apply asks it for the hosts that are unreachable or failed (`what` = "without fra1-db-1"), so
    the two can never disagree. `earlier` holds the verdicts of the services judged before (phase order).
    """

    inv: Inventory
    placement: Placement
    gone: frozenset[str]
    what: str
    level: str  # the failure-domain level lost ("provider", ...), or "host" for the apply's failed hosts
    earlier: dict[str, Verdict]


class Service:
    """One service (or one role of a service package). Subclasses set the class attributes and override
    the hooks they need; every hook has a neutral default."""

    name: ClassVar[str]  # phase name, and the inventory role it runs on unless `every_host` or `host_role`
    every_host: ClassVar[bool] = False  # runs on every inventory host (no role of its own)
    # Runs on the hosts of this role and has no inventory role of its own (e.g. the pooler on every db host).
    host_role: ClassVar[str | None] = None
    rollout: ClassVar[Rollout] = Rollout.PARALLEL
    # The load balancers' backend its hosts are drained from during a ROLLING rollout (a frontend's name).
    drain_backend: ClassVar[str | None] = None
    # Names (fnmatch patterns) of the secrets it owns; a secret asked for by no service's list is a bug.
    secrets: ClassVar[tuple[str, ...]] = ()
    # Those of its secrets (fnmatch patterns) that `deploykit secrets rotate` leaves alone, and why.
    unrotated: ClassVar[dict[str, str]] = {}
    # Where its column goes in the resilience table: from the edge (small) inward (large).
    tier_column: ClassVar[int] = 100
    # Debian packages it installs (for the lab's image); its desired state lists them per host.
    packages: ClassVar[tuple[str, ...]] = ()
    # What it reads from its hosts before its config is computed (see HostFact).
    host_facts: ClassVar[tuple[HostFact, ...]] = ()
    # Facts of other services (their HostFact names) its config reads too: its state is computed again once the
    # probe has read them, like the state of a service that reads facts of its own (e.g. the pooler orders its
    # rollout by db's leader fact).
    reads_facts: ClassVar[tuple[str, ...]] = ()
    # Its systemd units whose running (or being enabled) on a host that does not hold the role means the role
    # is to be retired there: the host had the role and the inventory took it away (see `retire`).
    retire_units: ClassVar[tuple[str, ...]] = ()

    @property
    def role(self) -> str | None:
        """The inventory role it runs on, which is its name; None when it has none of its own (`every_host`,
        `host_role`)."""
        return None if self.every_host or self.host_role is not None else self.name

    def runs_on(self, host: Host) -> bool:
        if self.host_role is not None:
            return host.has(self.host_role)
        return self.every_host or host.has(self.name)

    # --- plan ----------------------------------------------------------------------------------------------
    def place(self, ctx: PlacementContext) -> object | None:
        """Its part of the placement (pure), stored under its name; None: it has none."""
        return None

    def describe(self, inv: Inventory, placement: Placement) -> tuple[Section, ...]:
        """Its placement for people (`plan --offline`)."""
        return ()

    def describe_data(self, part: object) -> object:
        """Its placement part as JSON-able data (`plan --offline --json`)."""
        from deploykit.plan.serialize import to_data

        return to_data(part)

    def judge(self, ctx: TierContext) -> Verdict | None:
        """Its tier's verdict without `ctx.gone`; None: it has no tier (or no members in this inventory)."""
        return None

    def frontends(self, inv: Inventory, site: str) -> tuple[Frontend, ...]:
        """What it asks the load balancers of `site` to serve."""
        return ()

    def firewall(self, ctx: ConfigContext, host: Host) -> tuple[FirewallRule, ...]:
        """The ports it opens on `host` (a host it runs on), and to whom."""
        return ()

    def sysctls(self, host: Host) -> tuple[Sysctl, ...]:
        return ()

    def check(self, ctx: ConfigContext, host: Host) -> tuple[str, ...]:
        """Problems its facts show on `host` (a host it runs on), for the online plan to report by name
        (e.g. a mesh tunnel with no recent handshake). Nothing is changed because of them."""
        return ()

    # --- per host ------------------------------------------------------------------------------------------
    def config(self, ctx: ConfigContext, host: Host) -> object:
        raise NotImplementedError(f"service {self.name} has no config")

    def desired(self, cfg: Any) -> RoleState:
        raise NotImplementedError(f"service {self.name} has no desired state")

    def state(self, ctx: ConfigContext, host: Host) -> RoleState:
        return self.desired(self.config(ctx, host))

    def retire(self, ctx: ConfigContext, host: Host) -> RoleState:
        """The state of `host` once it no longer holds the role (its `retire_units` still run there): the
        units stopped and disabled, after `handover` (packages, files and data stay: a host given the role back
        starts from them). Run before every phase (the apply's retirement pass: apply/runner.py), while the
        firewall and the clusters still count the host."""
        units = tuple(Unit(u, enabled=False, running=False) for u in self.retire_units)
        return RoleState(role=self.name, services=units, prepare=self.handover(ctx, host), retiring=True)

    def handover(self, ctx: ConfigContext, host: Host) -> str | None:
        """What `host`, leaving the role, runs before its units stop (e.g. give up a leader role, leave the
        cluster's membership); None: nothing. Idempotent shell."""
        return None

    # --- rollout -------------------------------------------------------------------------------------------
    def batch_size(self, inv: Inventory) -> int:
        """Hosts changed at a time by a ROLLING rollout (after the first, canary, host)."""
        return 1

    def drain(self, placement: Placement, backend: str, servers: list[str],
              skip: frozenset[str]) -> dict[str, list[Step]]:
        """Steps (per load-balancer host, `skip` excluded) that stop traffic to `servers` of `backend` and
        wait for their open requests; each must fail when the load balancer did not take the command."""
        return {}

    def undrain(self, placement: Placement, backend: str, servers: list[str],
                skip: frozenset[str]) -> dict[str, list[Step]]:
        """Steps that put `servers` back into `backend` on every load-balancer host."""
        return {}


def _registered() -> tuple[Service, ...]:
    from deploykit.services import SERVICES

    return SERVICES
