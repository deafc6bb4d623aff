"""Resilience: for every unit of every failure-domain level, remove its hosts and judge each tier.

Worst case throughout: a Patroni leader, a Redis master or a VIP holder may sit in the lost unit (they move
at every failover), so a tier is "up" only if it keeps serving wherever its leader was.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement, units

TIERS: tuple[str, ...] = ("lb", "app", "worker", "db", "etcd", "cache")


class Status(str, Enum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        return {"up": 0, "degraded": 1, "down": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Verdict:
    tier: str
    status: Status
    reason: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    level: str
    unit: str
    lost_hosts: tuple[str, ...]
    verdicts: tuple[Verdict, ...]

    @property
    def status(self) -> Status:
        return max((v.status for v in self.verdicts), key=lambda s: s.rank, default=Status.UP)

    @property
    def title(self) -> str:
        return f"losing {self.level} {self.unit}"


@dataclass(frozen=True, slots=True)
class ResilienceReport:
    failure_domains: tuple[str, ...]
    tiers: tuple[str, ...]  # tiers present in the inventory
    scenarios: tuple[Scenario, ...]

    @property
    def survives(self) -> bool:
        return all(s.status is not Status.DOWN for s in self.scenarios)

    @property
    def failures(self) -> tuple[tuple[Scenario, Verdict], ...]:
        return tuple((s, v) for s in self.scenarios for v in s.verdicts if v.status is Status.DOWN)

    @property
    def degradations(self) -> tuple[tuple[Scenario, Verdict], ...]:
        return tuple((s, v) for s in self.scenarios for v in s.verdicts if v.status is Status.DEGRADED)


def analyse_resilience(inv: Inventory, placement: Placement) -> ResilienceReport:
    tiers = tuple(t for t in TIERS if inv.with_role(t))
    scenarios: list[Scenario] = []
    for level in inv.failure_domains:
        for unit, lost in units(inv, level).items():
            gone = frozenset(h.name for h in lost)
            verdicts = judge(inv, placement, tiers, level, unit, gone)
            scenarios.append(Scenario(level, unit, tuple(sorted(gone)), verdicts))
    return ResilienceReport(inv.failure_domains, tiers, tuple(scenarios))


def judge(inv: Inventory, p: Placement, tiers: tuple[str, ...], level: str, unit: str,
          gone: frozenset[str]) -> tuple[Verdict, ...]:
    what = f"losing {level} {unit}"
    out: dict[str, Verdict] = {}
    if "etcd" in tiers:
        out["etcd"] = _etcd(p, gone, what)
    if "db" in tiers:
        out["db"] = _db(p, gone, what, out.get("etcd"))
    if "cache" in tiers:
        out["cache"] = _cache(p, gone, what)
    if "app" in tiers:
        out["app"] = _app(inv, p, gone, what)
    if "worker" in tiers:
        out["worker"] = _worker(p, gone, what)
    if "lb" in tiers:
        out["lb"] = _lb(inv, p, gone, what)
    return tuple(out[t] for t in tiers)


def _left(names: list[str], gone: frozenset[str]) -> list[str]:
    return [n for n in names if n not in gone]


def _etcd(p: Placement, gone: frozenset[str], what: str) -> Verdict:
    names = [m.name for m in p.etcd.members]
    left = _left(names, gone)
    n, q = len(names), p.etcd.quorum
    if len(left) < q:
        return Verdict("etcd", Status.DOWN,
                       f"{what} loses etcd quorum: {len(left)} of {n} members left, a majority needs {q}",
                       "spread etcd over more failure domains so that no single one holds half of its members "
                       "(e.g. one member per provider over 3 providers)")
    if len(left) == n:
        return Verdict("etcd", Status.UP, f"all {n} members unaffected")
    return Verdict("etcd", Status.UP, f"{len(left)} of {n} members keep quorum ({q} needed)")


def _db(p: Placement, gone: frozenset[str], what: str, etcd: Verdict | None) -> Verdict:
    names = [m.name for m in p.db.members]
    left = _left(names, gone)
    lost = len(names) - len(left)
    n = len(names)
    if not left:
        return Verdict("db", Status.DOWN, f"{what} loses all {n} PostgreSQL members",
                       "add a db host (with the etcd role if etcd needs a member there) in another "
                       f"{what.split()[1]}")
    if etcd is not None and etcd.status is Status.DOWN:
        return Verdict("db", Status.DOWN, f"{what}: Patroni cannot hold its leader lock without etcd quorum, so "
                       "the primary steps down to read-only", "fix etcd's placement (see the etcd row)")
    if etcd is None:
        return Verdict("db", Status.DOWN, "no etcd: Patroni has no place for its leader lock", "add etcd hosts")
    if p.db.synchronous and lost > p.db.sync_standbys and lost > 0 and n > 1:
        return Verdict("db", Status.DOWN,
                       f"{what} may take the primary and all {p.db.sync_standbys} synchronous standby(s) at once; "
                       "Patroni will not promote a replica that may miss acknowledged commits",
                       "spread db hosts so that no failure domain holds more than one")
    if lost == 0:
        return Verdict("db", Status.UP, f"all {n} members unaffected")
    if len(left) == 1:
        note = (" writes go on without a synchronous standby until one returns" if p.db.synchronous
                else " no replica left")
        return Verdict("db", Status.DEGRADED,
                       f"{what} leaves 1 of {n} PostgreSQL members, which Patroni promotes if needed;{note}",
                       "add a db host in a third failure domain to keep a replica")
    extra = (f"a synchronous standby outside it has every acknowledged commit ({p.db.sync_standbys} per commit)"
             if p.db.synchronous else "asynchronous replication: commits not yet replicated may be lost")
    status = Status.UP if p.db.synchronous else Status.DEGRADED
    return Verdict("db", status, f"{len(left)} of {n} members left; {extra}")


def _cache(p: Placement, gone: frozenset[str], what: str) -> Verdict:
    names = [m.name for m in p.cache.members]
    left = _left(names, gone)
    sentinels = _left([m.name for m in p.cache.sentinels], gone)
    n, s, majority = len(names), len(p.cache.sentinels), len(p.cache.sentinels) // 2 + 1
    if not left:
        return Verdict("cache", Status.DOWN, f"{what} loses all {n} Redis servers",
                       "add a cache host in another failure domain")
    if len(left) == n:
        return Verdict("cache", Status.UP, f"all {n} Redis servers and sentinels unaffected")
    if len(sentinels) < majority:
        return Verdict("cache", Status.DOWN,
                       f"{what}: if the Redis master was there, no failover happens: {len(sentinels)} of {s} "
                       f"sentinels left, electing a failover leader needs {majority}",
                       "run sentinels (cache role) in at least 3 failure domains")
    return Verdict("cache", Status.UP,
                   f"{len(left)} of {n} Redis servers left; {len(sentinels)} of {s} sentinels can fail over "
                   f"(quorum {p.cache.quorum})")


def _app(inv: Inventory, p: Placement, gone: frozenset[str], what: str) -> Verdict:
    names = [m.name for m in p.app]
    left = _left(names, gone)
    n, need = len(names), inv.services.app.min_capacity
    if not left:
        return Verdict("app", Status.DOWN, f"{what} loses all {n} app hosts",
                       "add app hosts in another failure domain")
    share = len(left) / n
    if share + 1e-9 < need:
        return Verdict("app", Status.DEGRADED,
                       f"{len(left)} of {n} app hosts left ({share:.0%}), below min_capacity {need:.0%}",
                       "spread app hosts more evenly or add some, so that any loss keeps min_capacity")
    if len(left) == n:
        return Verdict("app", Status.UP, f"all {n} app hosts unaffected")
    return Verdict("app", Status.UP, f"{len(left)} of {n} app hosts left ({share:.0%} capacity)")


def _worker(p: Placement, gone: frozenset[str], what: str) -> Verdict:
    names = [m.name for m in p.workers]
    left = _left(names, gone)
    if not left:
        return Verdict("worker", Status.DOWN, f"{what} loses all {len(names)} workers: timelines stop filling",
                       "add worker hosts in another failure domain")
    if len(left) == len(names):
        return Verdict("worker", Status.UP, f"all {len(names)} workers unaffected")
    return Verdict("worker", Status.UP, f"{len(left)} of {len(names)} workers left")


def _lb(inv: Inventory, p: Placement, gone: frozenset[str], what: str) -> Verdict:
    serving, lost_sites, thinned = [], [], []
    for site in p.sites:
        alive = [m for m in site.members if m.name not in gone]
        if not site.members:
            continue
        if alive:
            serving.append(site.site)
            if len(alive) < len(site.members):
                thinned.append(f"{site.site} VIP {site.vip} moves to {alive[0].name}")
        else:
            lost_sites.append(site.site)
    if not serving:
        return Verdict("lb", Status.DOWN, f"{what} leaves no load balancer in any site",
                       "add lb hosts (and a vip) in a site of another provider")
    parts = []
    if thinned:
        parts.append("; ".join(thinned))
    if lost_sites:
        parts.append(f"VIP of {', '.join(lost_sites)} is gone (DNS must stop sending users there); "
                     f"{', '.join(serving)} still serve")
    if not parts:
        return Verdict("lb", Status.UP, f"all sites' load balancers unaffected ({len(serving)} site(s))")
    return Verdict("lb", Status.UP, "; ".join(parts))
