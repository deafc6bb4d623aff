"""Issue 12 end to end, under a steady write load through the VIPs the whole time:

- grow lab.yml (9 hosts) by two data hosts and a web host to 12 hosts with 5 etcd members, 5 db hosts and 5
  cache hosts; then shrink back (the leaving hosts' roles retired first, `roles: []`, then the hosts removed);
  then wipe one data host (new disk, new host key) and replace it with one apply. After each apply: it exited
  0, etcd lists exactly the inventory's members and is healthy, every Patroni replica streams (numeric lag),
  the sentinels agree on one master, and no running etcd member was restarted by a membership change.
- kill the Patroni leader's and the Redis master's servers, start them again: the next plan moves no leader
  (no change at all for db and cache), and the apply keeps the current leader and master.

No acknowledged post is lost (each is read back); failed requests are counted and printed (target 0).
Runs after test_stack_dns and before test_stack_mesh (same lab session; reuses the applied stack).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.smoke import request
from tests.e2e.conftest import LAB_INVENTORY, deploykit, grown_inventory
from tests.e2e.test_stack_web import VIP, https, https_url, lab_tls, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INV = load_inventory(LAB_INVENTORY)
DATA = [h.name for h in INV.with_role("db")]
NEW_DATA = ["fra1-data-2", "rbx1-data-2"]
NEW = [*NEW_DATA, "fra1-web-3"]
ENTRIES = ("  fra1-data-2:    {address: 10.77.1.22, site: fra1, roles: [db, etcd, cache]}",
           "  rbx1-data-2:    {address: 10.77.2.22, site: rbx1, roles: [db, etcd, cache]}",
           "  fra1-web-3:     {address: 10.77.1.13, site: fra1, roles: [app, worker]}")
MESH_NAMES: dict[str, str] = {str(h.mesh_address): h.name for h in INV.hosts}  # and the grown hosts, once read
ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=5s"
PATRONICTL = "patronictl -c /etc/patroni/config.yml"
STREAMING = ("runuser -u postgres -- psql -XAt -c \"select application_name from pg_stat_replication "
             "where state = 'streaming'\"")
SENTINEL = 'REDISCLI_AUTH="$(cat /etc/redis/deploykit.auth)" redis-cli --no-auth-warning -p 26379'


def ok(lab: Lab, host: str, cmd: str, timeout: float = 30) -> str:
    r = lab.ssh(host, cmd, timeout=timeout)
    assert r.returncode == 0, f"{host}: {cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


@dataclass
class Writer:
    """Posts every `every` seconds through one site's VIP; keeps the id of every acknowledged post."""

    site: str
    every: float = 0.05
    phase: str = "start"  # set by the test: which step a failed request fell into
    timeout: float = 5  # seconds a post may take (set by the test per step)
    slowest: dict[str, float] = field(default_factory=dict)  # step -> the longest acknowledged post (s)
    acked: list[int] = field(default_factory=list)
    failed: list[tuple[str, float, int, float, str]] = field(default_factory=list)  # phase, at, status, took, why
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        body = {"author": "e2e-grower", "text": "while hosts come and go"}
        t_start = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            answer = request("POST", https_url(VIP[self.site], "/api/posts"), body, self.timeout, context=lab_tls())
            if answer.status == 201 and isinstance(answer.body, dict):
                self.acked.append(int(answer.body["id"]))
                self.slowest[self.phase] = max(self.slowest.get(self.phase, 0.0), time.monotonic() - t0)
            else:
                self.failed.append((self.phase, round(t0 - t_start, 1), answer.status,
                                    round(time.monotonic() - t0, 1), answer.error[:160]))
            time.sleep(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def lost(self) -> list[int]:
        """Acknowledged posts that are not there (404 through another site; an error is asked again)."""
        out = []
        for pid in self.acked:
            deadline = time.monotonic() + 30
            while (code := https("GET", https_url(VIP["ams1"], f"/api/posts/{pid}"))[0]) not in (200, 404):
                assert time.monotonic() < deadline, f"post {pid}: no answer ({code})"
                time.sleep(0.5)
            if code == 404:
                out.append(pid)
        return out


def etcd_members(lab: Lab, via: str) -> dict[str, bool]:
    """Member name -> is a learner, as the cluster lists them."""
    data = json.loads(ok(lab, via, f"{ETCDCTL} member list -w json"))
    return {str(m.get("name", "")): bool(m.get("isLearner")) for m in data["members"]}


def etcd_pids(lab: Lab, hosts: list[str]) -> dict[str, str]:
    return {h: ok(lab, h, "systemctl show -p MainPID --value etcd").strip() for h in hosts}


def patroni(lab: Lab, via: str) -> list[dict]:
    return list(json.loads(ok(lab, via, f"{PATRONICTL} list -f json")))


def patroni_leader(lab: Lab, via: str) -> str:
    return next(str(m["Member"]) for m in patroni(lab, via) if m.get("Role") == "Leader")


def sentinel_master(lab: Lab, host: str) -> str:
    return ok(lab, host, f"{SENTINEL} sentinel get-master-addr-by-name chirp-lab").split()[0]


def redis_master(lab: Lab, hosts: list[str]) -> str:
    """The host whose mesh address the sentinels name (they must agree)."""
    answers = {h: sentinel_master(lab, h) for h in hosts}
    assert len(set(answers.values())) == 1, f"the sentinels disagree: {answers}"
    return MESH_NAMES[next(iter(answers.values()))]


# What a member that does not stream says: the decisions Patroni logged since it started (crash recovery,
# rewind, timelines: a former leader started as a replica without a rewind decision never becomes consistent
# if its WAL diverged), its control file, and the last lines of Patroni's and PostgreSQL's logs.
STUCK_REPLICA = (
    "journalctl -u patroni -b --no-pager -o cat | grep -iE 'rewind|timeline|crash|recovery|diverg|starting as|"
    "reinit|Leader is|clean shutdown|controldata|Minimum recovery' | "
    # PostgreSQL repeats these every few seconds while it waits; they would push Patroni's decisions out
    "grep -viE 'not been yet reached|not yet accepting connections' | tail -n 40; "
    "echo '--- pg_controldata'; /usr/lib/postgresql/15/bin/pg_controldata /var/lib/postgresql/15/chirp-lab | "
    "grep -E 'cluster state|TimeLineID|Minimum recovery|REDO location|Latest checkpoint location'; "
    "echo '--- patroni'; journalctl -u patroni -n 8 --no-pager -o cat; "
    "echo '--- postgresql'; tail -n 8 /var/lib/postgresql/15/chirp-lab/log/*.log 2>/dev/null"
)


def check_cluster(lab: Lab, etcd: list[str], db: list[str], cache: list[str]) -> tuple[str, str]:
    """Every cluster holds exactly these members and is healthy; returns (Patroni leader, Redis master)."""
    deadline = time.monotonic() + 240
    while True:  # a replica that just joined (or a former leader cloned again) streams once its basebackup is done
        members = patroni(lab, db[0])
        leader = next((str(m["Member"]) for m in members if m.get("Role") == "Leader"), None)
        replicas = {str(m["Member"]): m for m in members if m.get("Role") != "Leader"}
        # Patroni 3.0 says "running" (the "streaming" state came in 3.0.4): the leader's pg_stat_replication
        # says whether each replica streams. A member listed as leader may not answer yet: a restarted server
        # whose leader key had not expired starts PostgreSQL, then demotes it when another member holds the key
        # ("the database system is shutting down"); that is a state to wait out, like a replica not yet streaming.
        asked = lab.ssh(leader, STREAMING, timeout=30) if leader else None
        answered = asked is not None and asked.returncode == 0
        streams = set(asked.stdout.split()) if answered else set()
        numeric = all(isinstance(m.get("Lag in MB"), int) for m in replicas.values())
        listed = sorted(str(m["Member"]) for m in members)
        if listed == sorted(db) and answered and numeric and streams == set(replicas):
            break
        if time.monotonic() >= deadline:  # what the members that do not stream say (the reason, next time)
            logs = {h: lab.ssh(h, STUCK_REPLICA, timeout=30).stdout
                    for h in replicas if h not in streams or replicas[h].get("State") != "running"}
            if leader and not answered:
                logs[leader] = f"(the leader's PostgreSQL: {asked.stderr.strip() if asked else ''})\n" + lab.ssh(
                    leader, STUCK_REPLICA, timeout=30).stdout
            raise AssertionError(f"Patroni lists {members}; streaming to the leader: {streams}; logs: {logs}")
        time.sleep(2)
    listed = etcd_members(lab, etcd[0])
    assert listed == {n: False for n in etcd}, f"etcd lists {listed}"  # every member votes, no learner left
    ok(lab, etcd[0], f"{ETCDCTL} endpoint health --cluster")
    deadline = time.monotonic() + 60
    while True:  # sentinels rediscover each other after a reset within a few hello periods
        counts = {h: int(ok(lab, h, f"{SENTINEL} sentinel sentinels chirp-lab | grep -cx ip || true").strip())
                  for h in cache}
        if all(c == len(cache) - 1 for c in counts.values()):
            break
        assert time.monotonic() < deadline, f"sentinels know other sentinels: {counts} (want {len(cache) - 1})"
        time.sleep(2)
    return patroni_leader(lab, db[0]), redis_master(lab, cache)


def wipe_state(lab: Lab, leader: str) -> str:
    """Patroni's members and the leader's replication as they are now (for a failure message)."""
    sql = ("select application_name || ' ' || state || ' ' || sync_state from pg_stat_replication; "
           "show synchronous_standby_names")
    return " | ".join(lab.ssh(leader, cmd, timeout=30).stdout.strip() for cmd in (
        f"{PATRONICTL} list", f"runuser -u postgres -- psql -XAt -c \"{sql}\" 2>&1"))


def web_errors(lab: Lab, since: float) -> dict[str, str]:
    """fra1's web hosts' journal since `since`: the app's warnings and errors, and HAProxy's non-2xx answers."""
    return {h: lab.ssh(h, f"journalctl --since @{int(since)} -o short-precise --no-pager | grep -E "
                          "'WARNING|ERROR|Traceback|haproxy.* (50[0-9]|40[0-9]) ' | head -n 20", timeout=30).stdout
            for h in ("fra1-web-1", "fra1-web-2")}


def apply(inventory: Path) -> float:
    t0 = time.monotonic()
    r = deploykit("apply", str(inventory), "--yes", "--no-diff")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return time.monotonic() - t0


def test_grow_shrink_and_replace_hosts_of_every_data_tier_under_load(stack: Lab, tmp_path: Path,  # noqa: F811
                                                                     measure) -> None:
    assert https("POST", https_url(VIP["fra1"], "/api/users"), {"name": "e2e-grower"})[0] in (201, 409)
    pids = etcd_pids(stack, DATA)
    leader, master = check_cluster(stack, DATA, DATA, DATA)
    grown_path = grown_inventory(tmp_path, *ENTRIES)
    grown_inv = load_inventory(grown_path)
    MESH_NAMES.update({str(h.mesh_address): h.name for h in grown_inv.hosts})
    grown = Lab.for_inventory(grown_inv)
    retiring = tmp_path / "lab-retiring.yml"
    text = grown_path.read_text()
    for entry in ENTRIES:
        text = text.replace(entry, entry.split("roles:")[0] + "roles: []}")
    retiring.write_text(text)
    figures = []
    try:
        grown.up()
        with Writer("rbx1") as writes:
            writes.phase = "grow"
            took = apply(grown_path)
            figures.append(f"grow to 12 hosts {took:.1f} s")
            after = check_cluster(grown, [*DATA, *NEW_DATA], [*DATA, *NEW_DATA], [*DATA, *NEW_DATA])
            assert etcd_pids(grown, DATA) == pids, "a running etcd member was restarted for the membership change"
            assert after == (leader, master), f"growing moved a leader: {(leader, master)} -> {after}"
            web3 = grown_inv.host("fra1-web-3").mesh_address  # gunicorn listens on the mesh
            ok(grown, "fra1-web-3", f"curl -fsS -o /dev/null http://{web3}:8000/healthz")

            writes.phase = "retire"
            took = apply(retiring)
            figures.append(f"retire their roles {took:.1f} s")
            after = check_cluster(grown, DATA, DATA, DATA)
            assert etcd_pids(grown, DATA) == pids, "a running etcd member was restarted by the shrink"
            assert after == (leader, master), f"shrinking moved a leader: {(leader, master)} -> {after}"
            for h in NEW_DATA:
                for unit in ("etcd", "patroni", "redis-server", "redis-sentinel"):
                    assert ok(grown, h, f"systemctl is-active {unit} || true").strip() != "active", (h, unit)
    finally:
        r_back = deploykit("apply", str(LAB_INVENTORY), "--yes", "--no-diff")
        Lab.for_inventory(INV).up()  # then the servers go
    assert r_back.returncode == 0, r_back.stdout[-3000:] + r_back.stderr[-3000:]
    grow_failed, grow_acked = list(writes.failed), len(writes.acked)
    lost = writes.lost()

    # Replace a data host that leads nothing: a new disk and host key, same name and address. The wipe is a
    # server dying, not an operation: if it was the synchronous standby, commits wait until Patroni names
    # another one, once the dead member's key expires in etcd (Patroni 3.0 has no quorum commit), so posts may
    # take up to about `ttl` seconds then. They are waited for (and the longest is printed), not failed.
    victim = next(h for h in DATA if h not in (leader, master))
    was_sync = any(m.get("Role") == "Sync Standby" for m in patroni(stack, leader) if m["Member"] == victim)
    stall_budget = INV.services.db.ttl + 4 * INV.services.db.loop_wait + 5
    wiped_at = time.time()
    with Writer("fra1") as replace:
        replace.phase, replace.timeout = "wipe", stall_budget
        r = deploykit("lab", "wipe", "--inventory", str(LAB_INVENTORY), victim, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        time.sleep(20)
        during = wipe_state(stack, leader)  # what a failure below is explained by: the cluster mid-stall
        time.sleep(stall_budget - 20)  # posts sent while the wiped host was still counted as the sync standby
        replace.phase, replace.timeout = "replace", 5
        took = apply(LAB_INVENTORY)
        figures.append(f"replace {victim} {took:.1f} s")
        after = check_cluster(stack, DATA, DATA, DATA)
    assert after == (leader, master), f"replacing {victim} moved a leader: {(leader, master)} -> {after}"
    lost += replace.lost()
    failed = grow_failed + replace.failed
    measure("day two: grow 9 -> 12 hosts (5 etcd, 5 db, 5 cache), shrink back, replace a wiped data host",
            "; ".join(figures) + f"; {grow_acked + len(replace.acked)} posts acknowledged, {len(lost)} lost, "
            f"{len(failed)} failed requests {failed[:10]}; slowest post while {victim} "
            f"({'the sync standby' if was_sync else 'an asynchronous standby'}) was wiped: "
            f"{replace.slowest.get('wipe', 0):.1f} s, while it was replaced: {replace.slowest.get('replace', 0):.1f} s")
    assert not lost, f"acknowledged posts lost: {lost[:20]}"
    assert grow_acked > 100 and replace.acked
    why = Counter((f[0], f[2], f[4]) for f in failed).most_common(5)
    assert not failed, (f"{len(failed)} requests failed (target 0; phase, s after start, status, took, why): "
                        f"{failed[:5]} .. {failed[-2:]}; most common (phase, status, why): {why}; 20 s after the "
                        f"wipe: {during}; fra1's web hosts since: {web_errors(stack, wiped_at)}")


def test_reapplying_after_failovers_moves_no_leader(stack: Lab, measure) -> None:  # noqa: F811
    """The Patroni leader's server is killed (the others elect a new leader), started again; then the Redis
    master's (the sentinels fail over), started again. One server at a time: two of three data hosts down
    would take etcd's and the sentinels' majority with them."""
    leader, master = check_cluster(stack, DATA, DATA, DATA)
    new_leader, new_master = leader, master
    moves = []
    for victim in dict.fromkeys((leader, master)):
        # The victim may hold both roles by now (the first failover can elect the Redis master's host as
        # Patroni leader): wait until neither the Patroni leader key nor the sentinels name it, as seen from the
        # survivors; starting it earlier would race its own unexpired leader key.
        survivors = [h for h in DATA if h != victim]
        stack.kill([victim])
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    moved = (patroni_leader(stack, survivors[0]), redis_master(stack, survivors))
                except (AssertionError, StopIteration, KeyError, IndexError):
                    moved = ("", "")
                if all(moved) and victim not in moved:
                    break
                assert time.monotonic() < deadline, f"no failover away from {victim}: {moved}"
                time.sleep(1)
        finally:
            stack.start([victim])
        moves.append(f"{victim} killed: leader {new_leader} -> {moved[0]}, master {new_master} -> {moved[1]}")
        new_leader, new_master = check_cluster(stack, DATA, DATA, DATA)
        # the victim came back as a replica of both: starting a server takes no role back
        assert (new_leader, new_master) == moved, f"after {victim} started again: {(new_leader, new_master)}; {moves}"
    r = deploykit("plan", str(LAB_INVENTORY), "--json")
    assert r.returncode in (0, 2), r.stdout[-3000:] + r.stderr[-3000:]  # 2: changes (none expected, but said)
    plan = json.loads(r.stdout)
    touched = {(name, role["role"]) for name, h in plan["hosts"].items() for role in h.get("roles", [])
               if role["role"] in ("db", "cache", "etcd")}
    assert not touched, f"the plan after failovers changes {sorted(touched)}"
    apply(LAB_INVENTORY)
    assert check_cluster(stack, DATA, DATA, DATA) == (new_leader, new_master)
    # Every replica starts again from the config the failovers rewrote (CONFIG REWRITE copies settings into
    # redis.conf; a copied `user` line once made Redis refuse to start: "Duplicate user").
    for host in (h for h in DATA if h != new_master):
        ok(stack, host, "systemctl restart redis-server && /usr/local/lib/deploykit/redis-cli-login 6379 info "
                        "replication | grep -q '^role:slave'", timeout=60)
    assert check_cluster(stack, DATA, DATA, DATA) == (new_leader, new_master)
    measure("re-apply after a Patroni and a Redis failover",
            f"{'; '.join(moves)}; plan changes no db/cache/etcd role; apply kept leader {new_leader} and master "
            f"{new_master}")
