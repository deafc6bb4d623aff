"""Issue 4 end to end: apply the data tier to real lab servers over SSH and check it with its own clients.

Order matters (pytest runs a module's tests top to bottom): first apply, no-op apply, drift, saved plans,
host keys, unreachable hosts, and last the destructive one: killing the Patroni leader's server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.services.pooler.config import SOCKET_DIR, console_command, server_connections
from tests.e2e.conftest import LAB_INVENTORY, deploykit
from tests.installed import build_wheel, install

pytestmark = pytest.mark.e2e

INV = str(LAB_INVENTORY)
DATA = ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
PATRONI = "patronictl -c /etc/patroni/config.yml"


def ok(lab: Lab, host: str, cmd: str, timeout: float = 60) -> str:
    r = lab.ssh(host, cmd, timeout=timeout)
    assert r.returncode == 0, f"{host}: {cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def psql(lab: Lab, host: str, sql: str) -> subprocess.CompletedProcess[str]:
    return lab.ssh(host, f"runuser -u postgres -- psql -h /var/run/postgresql -p 5432 -X -Atq -v ON_ERROR_STOP=1 "
                         f"-c {json.dumps(sql)}")


def members(lab: Lab, via: str) -> list[dict]:
    return json.loads(ok(lab, via, f"{PATRONI} list -f json"))


def leader(lab: Lab, via: str) -> str | None:
    for m in members(lab, via):
        if m.get("Role") == "Leader" and m.get("State") == "running":
            return str(m["Member"])
    return None


def wait_for(what: str, fn, timeout: float = 90, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, json.JSONDecodeError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def first_apply(lab: Lab, measure) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    r = deploykit("apply", INV, "--yes")
    measure("first apply of the lab inventory", f"{time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


def test_first_apply_brings_up_etcd_with_all_members(lab: Lab, first_apply) -> None:
    out = ok(lab, "fra1-data-1", "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 member list -w json")
    names = sorted(m["name"] for m in json.loads(out)["members"])
    assert names == DATA
    health = lab.ssh("fra1-data-1", "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 "
                                    "endpoint health --cluster")
    assert health.returncode == 0 and (health.stdout + health.stderr).count("is healthy") == 3, health


def test_first_apply_brings_up_patroni_with_one_leader_and_streaming_replicas(lab: Lab, first_apply) -> None:
    ms = wait_for("a leader and 2 running replicas", lambda: (
        m if (m := members(lab, "fra1-data-1")) and sum(x["Role"] == "Leader" for x in m) == 1
        and sum(x["State"] in ("running", "streaming") for x in m) == 3 else None), timeout=120)
    lead = next(m["Member"] for m in ms if m["Role"] == "Leader")
    states = wait_for("2 streaming replicas", lambda: (
        r.stdout.split() if (r := psql(lab, lead, "select sync_state from pg_stat_replication "
                                                  "where state = 'streaming' order by 1")).returncode == 0
        and len(r.stdout.split()) == 2 else None))
    assert "sync" in states, f"synchronous: true should give a sync standby, got {states}"


def test_app_connections_reach_postgresql_only_through_pgbouncer_pools(lab: Lab, first_apply) -> None:
    """The app's path: HAProxy's db-primary frontend -> the leader's PgBouncer -> PostgreSQL's unix socket. The
    app user has no other way in (pg_hba), and its server connections stay within the pools' sizes."""
    inv = load_inventory(LAB_INVENTORY)
    lead = wait_for("a running leader", lambda: leader(lab, "fra1-data-1"))
    password = deploykit("secrets", "get", INV, "db-app-password").stdout.strip()
    assert password
    lb_host = inv.host("fra1-web-1")  # an lb host: its db-primary frontend listens on its mesh address
    assert lb_host.has("lb")
    dsn = f"host={lb_host.mesh_address} port={inv.services.lb.db_primary_port} user=chirp connect_timeout=5"
    login = f"PGPASSWORD='{password}' psql -XAt"

    def query(db: str, sql: str) -> str:
        return ok(lab, "fra1-web-1", f"{login} {json.dumps(f'{dsn} dbname={db}')} -c {json.dumps(sql)}").strip()

    # Through the load balancer: the primary, reached over a unix socket (PgBouncer's), not over TCP; the
    # transaction pool sets the statement timeout, the session pool (same database) does not.
    assert query("chirp", "select inet_server_addr() is null, pg_is_in_recovery(), "
                          "current_setting('statement_timeout')") == "t|f|5s"
    assert query("chirp_session", "select current_database(), current_setting('statement_timeout')") == "chirp|0"
    # Straight to PostgreSQL's port over the mesh: refused (firewall and pg_hba), whatever the password.
    direct = f"host={inv.host(lead).mesh_address} port={inv.services.db.port} dbname=chirp user=chirp connect_timeout=3"
    r = lab.ssh("fra1-web-1", f"{login} {json.dumps(direct)} -c 'select 1'", timeout=30)
    assert r.returncode != 0, r.stdout
    # PgBouncer's own console on the leader: the app's pools exist, and PostgreSQL sees only pooled connections.
    console = f"runuser -u postgres -- {console_command(SOCKET_DIR, inv.services.pooler.port)} -At"
    pools = ok(lab, lead, f"{console} -c 'SHOW POOLS'")
    assert any(line.startswith("chirp|chirp|") for line in pools.splitlines()), pools
    counts = psql(lab, lead, "select count(*), count(client_addr) from pg_stat_activity where usename = 'chirp'")
    assert counts.returncode == 0, counts.stderr
    total, over_tcp = (int(x) for x in counts.stdout.strip().split("|"))
    most = server_connections(inv)
    assert over_tcp == 0 and 0 < total <= most, counts.stdout


def test_first_apply_brings_up_redis_with_replicas_and_sentinels(lab: Lab, first_apply) -> None:
    auth = "REDISCLI_AUTH=$(cat /etc/redis/deploykit.auth)"
    addr = wait_for("sentinels agree on a master", lambda: ok(
        lab, "fra1-data-1", f"{auth} redis-cli -p 26379 sentinel get-master-addr-by-name chirp-lab").split())
    master_ip = addr[0]
    # the sentinels know the cache hosts by their mesh addresses (all Redis traffic is on the mesh)
    master = {str(h.mesh_address): h.name for h in load_inventory(LAB_INVENTORY).hosts}[master_ip]
    info = wait_for("2 connected replicas", lambda: (
        i if "connected_slaves:2" in (i := ok(lab, master, f"{auth} redis-cli info replication")) else None))
    assert "role:master" in info
    for host in DATA:
        if host != master:
            assert "role:slave" in ok(lab, host, f"{auth} redis-cli info replication")
    sentinels = ok(lab, "ams1-data-1", f"{auth} redis-cli -p 26379 sentinel master chirp-lab")
    lines = sentinels.split()
    assert lines[lines.index("num-other-sentinels") + 1] == "2"
    assert lines[lines.index("quorum") + 1] == "2"


def test_secrets_never_appear_in_output(first_apply) -> None:
    names = deploykit("secrets", "list", INV)
    assert names.returncode == 0
    values = [deploykit("secrets", "get", INV, n).stdout.strip() for n in names.stdout.split()]
    assert len(values) >= 4 and all(len(v) >= 16 for v in values)
    text = first_apply.stdout + first_apply.stderr
    assert "<redacted:" in text  # the first apply showed diffs of files that hold secrets ...
    for v in values:
        assert v not in text  # ... and never a value


def test_second_apply_changes_nothing(first_apply, measure) -> None:
    t0 = time.monotonic()
    r = deploykit("apply", INV, "--yes")
    measure("no-op apply of the lab inventory", f"{time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "9 hosts: 0 to change, 9 unchanged. No changes." in r.stdout
    plan = deploykit("plan", INV)
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_the_installed_wheel_plans_the_lab_from_outside_the_checkout(first_apply, tmp_path: Path) -> None:
    """Issue 8: the wheel is the product. Built, installed into a fresh virtualenv and run from a directory with
    only a copy of the inventory (and its lab keys, secrets and DNS serial), it connects and finds nothing to
    change."""
    python, _ = install(build_wheel(tmp_path / "wheel"), tmp_path / "venv")
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(LAB_INVENTORY, work / "lab.yml")
    shutil.copytree(LAB_INVENTORY.parent / ".lab", work / ".lab")
    for state in ("chirp-lab.secrets", "chirp-lab.dns-serial"):  # the deployment's state kept beside it
        shutil.copy(LAB_INVENTORY.parent / state, work / state)
    r = subprocess.run([str(python), "-m", "deploykit", "plan", "lab.yml"], capture_output=True, text=True,
                       cwd=work, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "9 hosts: 0 to change, 9 unchanged. No changes." in r.stdout


def test_plan_shows_exactly_a_hand_made_change_and_exits_2(lab: Lab, first_apply) -> None:
    ok(lab, "rbx1-web-2", "echo '# edited by hand' >> /etc/ssh/sshd_config.d/05-deploykit.conf")
    r = deploykit("plan", INV, "--json")
    assert r.returncode == 2, r.stdout + r.stderr
    data = json.loads(r.stdout)
    changed = {n: h for n, h in data["hosts"].items() if h["status"] != "unchanged"}
    assert list(changed) == ["rbx1-web-2"]
    (role,) = changed["rbx1-web-2"]["roles"]
    assert [(f["path"], f["action"]) for f in role["files"]] == [("/etc/ssh/sshd_config.d/05-deploykit.conf",
                                                                   "update")]
    assert "-# edited by hand" in role["files"][0]["diff"]
    assert [s["name"] for s in role["services"]] == ["ssh"]
    text = deploykit("plan", INV)
    assert text.returncode == 2 and "1 to change, 8 unchanged" in text.stdout
    fix = deploykit("apply", INV, "--yes", "--limit", "rbx1-web-2")
    assert fix.returncode == 0, fix.stdout + fix.stderr
    assert deploykit("plan", INV).returncode == 0


def test_apply_without_a_terminal_needs_yes(lab: Lab, first_apply) -> None:
    ok(lab, "fra1-web-1", "echo '# drift' >> /etc/ssh/sshd_config.d/05-deploykit.conf")
    r = deploykit("apply", INV)
    assert r.returncode == 1 and "pass --yes" in r.stderr
    assert "# drift" in ok(lab, "fra1-web-1", "cat /etc/ssh/sshd_config.d/05-deploykit.conf")  # nothing applied


def test_saved_plan_is_applied_exactly_and_a_stale_one_refused(lab: Lab, first_apply, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    r = deploykit("plan", INV, "--out", str(saved))
    assert r.returncode == 2, r.stdout + r.stderr
    assert json.loads(saved.read_text())["counts"]["change"] == 1  # the drift of the previous test
    ok(lab, "ams1-web-1", "echo '# more drift' >> /etc/ssh/sshd_config.d/05-deploykit.conf")
    stale = deploykit("apply", str(saved))
    assert stale.returncode == 1 and "stale plan" in stale.stderr and "ams1-web-1" in stale.stderr
    r = deploykit("plan", INV, "--out", str(saved))
    assert r.returncode == 2
    applied = deploykit("apply", str(saved))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert deploykit("plan", INV).returncode == 0


def _inventory_copy(tmp_path: Path, known_hosts: str) -> Path:
    d = tmp_path / "inv"
    (d / ".lab").mkdir(parents=True)
    shutil.copy(LAB_INVENTORY, d / "lab.yml")
    shutil.copy(LAB_INVENTORY.parent / ".lab" / "id_ed25519", d / ".lab" / "id_ed25519")
    (d / ".lab" / "known_hosts").write_text(known_hosts)
    return d / "lab.yml"


def test_changed_or_unknown_host_keys_are_refused(tmp_path: Path, first_apply) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()
    inv = load_inventory(LAB_INVENTORY)
    wrong = "".join(f"{h.address} {other[0]} {other[1]}\n" for h in inv.hosts)
    r = deploykit("plan", str(_inventory_copy(tmp_path / "a", wrong)))
    assert r.returncode == 1
    assert r.stdout.count("HOST KEY CHANGED") == 9, r.stdout + r.stderr
    r = deploykit("plan", str(_inventory_copy(tmp_path / "b", "")))
    assert r.returncode == 1
    assert r.stdout.count("host key not in known_hosts") == 9, r.stdout + r.stderr


def test_unreachable_host_is_reported_and_the_others_planned(lab: Lab, first_apply) -> None:
    lab.kill(["ams1-web-2"])
    try:
        r = deploykit("plan", INV, "--json")
        assert r.returncode == 1, r.stdout + r.stderr
        hosts = json.loads(r.stdout)["hosts"]
        assert hosts["ams1-web-2"]["status"] == "unreachable"
        assert sum(h["status"] == "unchanged" for h in hosts.values()) == 8
    finally:
        lab.start(["ams1-web-2"])


def test_killing_the_patroni_leader_elects_a_new_one_without_losing_writes(lab: Lab, first_apply, measure) -> None:
    old = wait_for("a leader", lambda: leader(lab, "fra1-data-1"))
    create = "create table if not exists e2e_writes (id serial primary key, note text not null)"
    assert psql(lab, old, create).returncode == 0
    before = psql(lab, old, "insert into e2e_writes (note) values ('before the kill') returning id")
    assert before.returncode == 0, before.stderr  # acknowledged by the primary and its synchronous standby
    survivor = next(h for h in DATA if h != old)
    t0 = time.monotonic()
    lab.kill([old])
    try:
        new = wait_for("a new leader", lambda: (n if (n := leader(lab, survivor)) not in (None, old) else None),
                       timeout=90)
        elapsed = time.monotonic() - t0
        measure("Patroni: new leader after the leader's server was killed", f"{elapsed:.1f} s ({old} -> {new})")
        wrote = wait_for("a write on the new leader", lambda: (
            r if (r := psql(lab, new, "insert into e2e_writes (note) values ('after the kill') returning id"))
            .returncode == 0 else None), timeout=30)
        assert wrote.stdout.strip().isdigit()
        notes = psql(lab, new, "select note from e2e_writes order by id").stdout.split("\n")
        assert "before the kill" in notes and "after the kill" in notes
    finally:
        lab.start([old])
    t1 = time.monotonic()
    wait_for("the old leader back as a replica", lambda: (
        m if len(m := members(lab, survivor)) == 3 and all(x["State"] in ("running", "streaming") for x in m)
        else None), timeout=120)
    measure("Patroni: killed leader rejoined as a replica after start", f"{time.monotonic() - t1:.1f} s")
