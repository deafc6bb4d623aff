"""Issue 13 end to end: pgBackRest backups into two repositories at two providers, point-in-time restore of the
whole cluster after an operator error, a restore drill, and both with one repository's provider powered off.

- Posts A, a full backup, posts B, time T, every post deleted on the leader (the operator error), an
  incremental backup after it; `deploykit restore --time T --yes`: every post of A and B reads back through the
  VIPs, one leader, replicas streaming (cloned from the leader or a backup on the new timeline).
- The repositories hold no plaintext of a known post, and every file in them is encrypted (OpenSSL's
  "Salted__" header of pgBackRest's aes-256-cbc).
- The provider of the leader (moved first, if needed, to a provider with a repository) is powered off, with
  one repository: Patroni fails over; a backup goes into the other repository (`deploykit backup --repo`), and
  a post written after it is found by a restore drill there (`restore --into`): archiving followed the new
  primary without a config change.

Runs after test_stack_mesh and before test_stack_rotate (same lab session; reuses the applied stack) and
leaves the stack as it found it: every server up, one leader, every replica streaming.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from tests.e2e.conftest import LAB_INVENTORY, deploykit
from tests.e2e.test_stack_grow import DATA, PATRONICTL, check_cluster, ok, patroni, patroni_leader
from tests.e2e.test_stack_web import VIP, https, https_url, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INV = load_inventory(LAB_INVENTORY)
REPOS = [h.name for h in INV.with_role("backup")]
AUTHOR = "e2e-restorer"
PSQL = "runuser -u postgres -- psql -XAtq -d chirp -c"


def post(text: str, site: str = "rbx1") -> int:
    deadline = time.monotonic() + 60
    while True:
        code, answer = https("POST", https_url(VIP[site], "/api/posts"), {"author": AUTHOR, "text": text})
        if code == 201 and isinstance(answer, dict):
            return int(answer["id"])
        assert time.monotonic() < deadline, f"no post acknowledged through {site} in 60 s (last: {code})"
        time.sleep(1)


def readable(pid: int, site: str) -> int:
    """The status of post `pid` through `site`'s VIP, asked again while the answer is not 200 or 404."""
    deadline = time.monotonic() + 60
    while (code := https("GET", https_url(VIP[site], f"/api/posts/{pid}"))[0]) not in (200, 404):
        assert time.monotonic() < deadline, f"post {pid}: no answer through {site} ({code})"
        time.sleep(1)
    return code


def run(*args: str, timeout: float = 1800) -> str:
    r = deploykit(*args, timeout=timeout)
    assert r.returncode == 0, f"deploykit {' '.join(args)}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


def seconds(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return float(found.group(1))


def test_point_in_time_restore_after_an_operator_error(stack: Lab, measure) -> None:  # noqa: F811
    assert https("POST", https_url(VIP["fra1"], "/api/users"), {"name": AUTHOR})[0] in (201, 409)
    marker = f"plaintext-marker-{int(time.time())}"
    a = [post(f"{marker} A{i}") for i in range(20)]
    backed = run("backup", str(LAB_INVENTORY), "--type", "full")
    assert backed.count(" full backup ") == len(REPOS), backed
    b = [post(f"{marker} B{i}", site=("fra1", "ams1")[i % 2]) for i in range(20)]
    time.sleep(1.5)
    target = datetime.now(UTC)
    time.sleep(1.5)
    leader = patroni_leader(stack, DATA[0])
    deleted = ok(stack, leader, f"{PSQL} 'delete from posts returning id' | wc -l").strip()
    assert int(deleted) >= len(a) + len(b)
    assert readable(a[0], "ams1") == 404 and readable(b[-1], "fra1") == 404
    # The night's backup ran after the mistake: the newest backup lies on the timeline the restore abandons,
    # so the restore must not clone the replicas from it (it takes a new full backup first).
    run("backup", str(LAB_INVENTORY), "--type", "incr")

    listed = run("backups", str(LAB_INVENTORY), "--json")
    assert '"encrypted": true' in listed and '"recoverable": {' in listed, listed
    t0 = time.monotonic()
    restored = run("restore", str(LAB_INVENTORY), "--time", target.isoformat(), "--yes")
    took = time.monotonic() - t0
    restore_s = seconds(r"restored \S+ to \S+ from repo\d \(\S+\) in ([0-9.]+) s", restored)

    missing = [(pid, site) for site in VIP for pid in (*a, *b) if readable(pid, site) != 200]
    assert not missing, f"posts not restored (post, site): {missing[:20]}"
    leader, _ = check_cluster(stack, DATA, DATA, DATA)  # one leader, every replica streaming (numeric lag)
    # The replicas were built again from a backup (create_replica_methods: pgbackrest first), not from the leader.
    methods = {h: ok(stack, h, "journalctl -u patroni --since '-15 min' --no-pager | "
                               "grep -o 'replica has been created using [a-z_]*' | tail -n 1")
               for h in DATA if h != leader}
    assert all("using pgbackrest" in m for m in methods.values()), methods
    after = post("written after the restore")
    assert all(readable(after, site) == 200 for site in VIP)

    # Encrypted at rest: no plaintext of a known post, and every file carries the cipher's header.
    for repo in REPOS:
        found = stack.ssh(repo, f"grep -rl {marker} /var/lib/pgbackrest | head -n 3", timeout=60)
        assert found.returncode == 0 and not found.stdout.strip(), (repo, found.stdout, found.stderr)
        heads = ok(stack, repo, "find /var/lib/pgbackrest -type f -size +0 -exec head -c 8 {} \\; -exec echo \\; "
                                "| sort | uniq -c", timeout=60)
        assert re.fullmatch(r"\s*\d+ Salted__\s*", heads), (repo, heads)
    measure("point-in-time restore after an operator error (40 posts deleted on the leader)",
            f"restore {restore_s:.1f} s (command {took:.1f} s); {len(a) + len(b)} posts back through all 3 VIPs; "
            f"leader {leader}; replicas built from a backup ({', '.join(methods)}); every file in {len(REPOS)} "
            "repositories encrypted, no plaintext")


def test_backup_and_restore_drill_with_a_repository_provider_powered_off(stack: Lab, measure) -> None:  # noqa: F811
    repo_providers = {INV.host(r).provider: r for r in REPOS}
    leader = patroni_leader(stack, DATA[0])
    if INV.host(leader).provider not in repo_providers:
        # The leader goes down with a repository's provider (archiving must follow the failover): in synchronous
        # mode Patroni switches over only to the synchronous standby, at a provider with a repository here.
        sync = next(str(m["Member"]) for m in patroni(stack, leader) if m.get("Role") == "Sync Standby")
        assert INV.host(sync).provider in repo_providers, (leader, sync)
        ok(stack, leader, f"{PATRONICTL} switchover --leader {leader} --candidate {sync} --force", timeout=120)
        deadline = time.monotonic() + 90
        while patroni_leader(stack, sync) != sync:
            assert time.monotonic() < deadline, f"the switchover to {sync} did not happen"
            time.sleep(1)
        check_cluster(stack, DATA, DATA, DATA)
        leader = sync
    home, provider = leader, INV.host(leader).provider
    lost_repo = repo_providers[provider]
    victims = [h.name for h in INV.hosts if h.provider == provider]
    other = next(r for r in REPOS if r != lost_repo)
    survivors = [h for h in DATA if h != home]
    live = [site for site in VIP if INV.sites[site].provider != provider]  # sites whose VIP stays up
    stack.kill(victims)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                new_leader = patroni_leader(stack, survivors[0])
            except (AssertionError, StopIteration):
                new_leader = home
            if new_leader != home:
                break
            assert time.monotonic() < deadline, "no failover after the leader's provider was powered off"
            time.sleep(1)
        before = post("backed up with a repository's provider off", site=live[0])
        t0 = time.monotonic()
        backed = run("backup", str(LAB_INVENTORY), "--repo", other, "--type", "diff")
        backup_s = time.monotonic() - t0
        assert " diff backup " in backed, backed
        after = post("archived from the new primary", site=live[-1])
        drill = run("restore", str(LAB_INVENTORY), "--into", other, "--query",
                    f"select max(id), max(created_at) from posts where id in ({before}, {after})")
        drill_s = seconds(r"restore drill on \S+ from repo\d \(to the newest WAL\): ([0-9.]+) s", drill)
        newest = re.search(r"last transaction recovered at (.+)", drill)
        assert newest and f"\n{after} | " in drill, drill
        # The whole cluster is not restored without every member: refused before anything stops.
        r = deploykit("restore", str(LAB_INVENTORY), "--time", datetime.now(UTC).isoformat(), "--yes")
        assert r.returncode != 0 and "every db member reachable" in r.stderr, r.stdout + r.stderr
    finally:
        stack.start(victims)
    check_cluster(stack, DATA, DATA, DATA)
    measure(f"backup and restore drill with provider {provider} (repository {lost_repo}) powered off",
            f"leader {home} -> {new_leader}; diff backup into {other} {backup_s:.1f} s; drill {drill_s:.1f} s, "
            f"newest transaction recovered at {newest.group(1).strip()} (post {after}, written after the failover)")
