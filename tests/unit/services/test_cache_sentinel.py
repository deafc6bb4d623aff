"""Role cache against a running group: who is master (the sentinels' answer), what a new or wiped host is seeded
with, which host restarts last, and the runtime scripts run for real by sh against a stub redis-cli."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services.cache import state as cache
from deploykit.services.cache.config import cache_config
from deploykit.services.cache.sentinel import (
    CLI_AUTH,
    LOGIN,
    MASTER_FACT,
    PREVIOUS_AUTH,
    auth_script,
    current_master,
    failover_script,
    login_script,
    sync_script,
)
from deploykit.services.contract import ConfigContext

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "inventories" / "lab.yml"
HOSTS = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def ctx_with(reports: dict[str, str], path: Path = LAB) -> ConfigContext:
    inv = load_inventory(path)
    return ConfigContext(inv, plan_placement(inv), secret, facts={h: {MASTER_FACT: v} for h, v in reports.items()})


def mesh(ctx: ConfigContext, host: str) -> str:
    return str(ctx.inv.host(host).mesh_address)


def test_the_master_is_what_most_sentinels_report() -> None:
    base = ctx_with({})
    fra1 = mesh(base, "fra1-data-1")
    assert current_master(ctx_with({h: fra1 for h in HOSTS}), HOSTS, "ams1-data-1") == ("fra1-data-1", True)
    two_to_one = {"ams1-data-1": mesh(base, "ams1-data-1"), "fra1-data-1": fra1, "rbx1-data-1": fra1}
    assert current_master(ctx_with(two_to_one), HOSTS, "ams1-data-1") == ("fra1-data-1", True)
    # a tie goes to the first by name; an address that is no member, or garbage, is no vote
    tie = {"ams1-data-1": mesh(base, "rbx1-data-1"), "fra1-data-1": fra1, "rbx1-data-1": "10.77.9.9"}
    assert current_master(ctx_with(tie), HOSTS, "ams1-data-1") == ("fra1-data-1", True)
    assert current_master(ctx_with({"ams1-data-1": "ERR no such master"}), HOSTS, "ams1-data-1") == (
        "ams1-data-1", False)
    assert current_master(base, HOSTS, "ams1-data-1") == ("ams1-data-1", False)


def test_after_a_failover_the_config_follows_the_sentinels() -> None:
    ctx = ctx_with({h: mesh(ctx_with({}), "rbx1-data-1") for h in HOSTS})
    cfgs = {h: cache_config(ctx, ctx.inv.host(h)) for h in HOSTS}
    assert [h for h, c in cfgs.items() if c.is_master] == ["rbx1-data-1"]
    assert {h: str(c.replicaof) for h, c in cfgs.items()} == {
        "ams1-data-1": mesh(ctx, "rbx1-data-1"), "fra1-data-1": mesh(ctx, "rbx1-data-1"), "rbx1-data-1": "None"}
    # the running master changes last; the others in name order
    assert {h: cache.desired(c).rollout_order for h, c in cfgs.items()} == {
        "ams1-data-1": 0, "fra1-data-1": 0, "rbx1-data-1": 1}


def test_on_the_first_deploy_the_initial_master_starts_first() -> None:
    ctx = ctx_with({})
    assert [cache.desired(cache_config(ctx, ctx.inv.host(h))).rollout_order for h in HOSTS] == [0, 0, 0]


def test_a_new_host_is_seeded_toward_the_current_master(tmp_path: Path) -> None:
    text = LAB.read_text().replace("  rbx1-web-[1:2]:", "  fra1-data-2: {address: 10.77.1.22, site: fra1, "
                                   "roles: [cache]}\n  rbx1-web-[1:2]:", 1)
    (tmp_path / "lab.yml").write_text(text)
    rbx1 = mesh(ctx_with({}), "rbx1-data-1")
    ctx = ctx_with({h: rbx1 for h in HOSTS}, tmp_path / "lab.yml")
    st = cache.desired(cache_config(ctx, ctx.inv.host("fra1-data-2")))
    redis = next(f for f in st.files if f.path == cache.REDIS_CONF).content
    sentinel = next(f for f in st.files if f.path == cache.SENTINEL_CONF).content
    assert f"replicaof {rbx1} 6379" in redis.splitlines()
    assert f"sentinel monitor chirp-lab {rbx1} 6379 3" in sentinel.splitlines()  # 4 members: quorum 3
    # every member's settings change (quorum and members), which the running sentinels apply: no re-seed
    settings = next(f for f in st.files if f.path == "/etc/deploykit/cache-sentinel").content
    assert "quorum 3" in settings.splitlines() and len([ln for ln in settings.splitlines()
                                                         if ln.startswith("member ")]) == 4


def test_the_sentinel_id_is_the_same_whenever_a_host_is_seeded() -> None:
    ids = {h: cache.sentinel_id("chirp-lab", h) for h in HOSTS}
    assert len(set(ids.values())) == 3 and all(len(i) == 40 and int(i, 16) >= 0 for i in ids.values())
    assert cache.sentinel_id("chirp-lab", "fra1-data-1") == ids["fra1-data-1"]


# --- the scripts, run by sh against a stub redis-cli -------------------------------------------------------------

STUB = """#!/bin/sh
# a Redis and a Sentinel: the state is files in $STUB_DIR; every call is logged
case " $* " in *" -x "*) echo "$* <$(cat)>" >> "$STUB_DIR/calls" ;; *) echo "$*" >> "$STUB_DIR/calls" ;; esac
port=""; while [ "$1" != "${1#-}" ]; do case "$1" in -p) port=$2; shift 2 ;; -h) shift 2 ;; *) shift ;; esac; done
case "$*" in
  "info replication") printf 'role:%s\\r\\nconnected_slaves:%s\\r\\n' "$(cat "$STUB_DIR/role")" \\
                      "$(cat "$STUB_DIR/slaves")" ;;
  "sentinel failover "*) echo OK; echo slave > "$STUB_DIR/role" ;;
  "sentinel set "*) echo OK ;;
  "acl setuser "*|"config set "*|"sentinel config set "*) echo OK ;;
  "sentinel flushconfig") echo OK ;;
  "ping") if [ "$REDISCLI_AUTH" = "$(cat "$STUB_DIR/accepts" 2>/dev/null || echo pw)" ]; then echo PONG;
          else echo "WRONGPASS invalid username-password pair"; fi ;;
  "sentinel replicas "*) printf 'name\\n10.0.0.2:6379\\nip\\n10.0.0.2\\nport\\n6379\\n' ;;
  "sentinel sentinels "*) cat "$STUB_DIR/sentinels" ;;
  "sentinel reset "*) echo 1; printf 'name\\nx\\nip\\n10.0.0.2\\nport\\n26379\\nname\\ny\\nip\\n10.0.0.3\\n' \\
                      > "$STUB_DIR/sentinels" ;;
  "sentinel get-master-addr-by-name "*) printf '10.0.0.1\\n6379\\n' ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def stub(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    login = login_script().replace(PREVIOUS_AUTH, str(tmp_path / "previous")).replace(CLI_AUTH, str(tmp_path / "auth"))
    for name, text in (("redis-cli", STUB), ("systemctl", "#!/bin/sh\nexit 0\n"), ("sleep", "#!/bin/sh\n"),
                       ("login", login)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "auth").write_text("pw\n")
    (tmp_path / "previous").write_text("")
    return tmp_path


def run(script: str, stub: Path) -> subprocess.CompletedProcess[str]:
    script = (script.replace(LOGIN, str(stub / "bin" / "login")).replace(PREVIOUS_AUTH, str(stub / "previous"))
              .replace(CLI_AUTH, str(stub / "auth")))
    env = {**os.environ, "PATH": f"{stub / 'bin'}:{os.environ['PATH']}", "STUB_DIR": str(stub)}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)


def calls(stub: Path) -> list[str]:
    path = stub / "calls"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.split(" ", 5)[-1] if ln.startswith("--no-auth-warning") else ln for ln in lines
            if not ln.endswith(" ping")]


def test_a_master_with_replicas_fails_over_before_it_restarts(stub: Path) -> None:
    (stub / "role").write_text("master")
    (stub / "slaves").write_text("2")
    r = run(failover_script(6379, 26379, "chirp-lab"), stub)
    assert r.returncode == 0, r.stderr
    assert "failing over to a replica first" in r.stdout
    assert [c for c in calls(stub) if c.startswith("sentinel")] == ["sentinel failover chirp-lab"]
    assert (stub / "role").read_text().strip() == "slave"


@pytest.mark.parametrize(("role", "slaves"), [("slave", "0"), ("master", "0")])
def test_a_replica_or_a_lone_master_restarts_without_a_failover(stub: Path, role: str, slaves: str) -> None:
    (stub / "role").write_text(role)
    (stub / "slaves").write_text(slaves)
    r = run(failover_script(6379, 26379, "chirp-lab"), stub)
    assert r.returncode == 0, r.stderr
    assert not [c for c in calls(stub) if c.startswith("sentinel")]


def test_sync_sets_the_settings_and_resets_a_sentinel_that_knows_a_departed_host(stub: Path) -> None:
    (stub / "sentinels").write_text("name\na\nip\n10.0.0.2\nport\n26379\nname\nb\nip\n10.0.0.9\nport\n26379\n")
    members = tuple(__import__("ipaddress").IPv4Address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    r = run(sync_script(26379, "chirp-lab", (("quorum", "2"), ("parallel-syncs", "1")), members, 2, ("h1",)), stub)
    assert r.returncode == 0, r.stderr
    assert "sentinel forgets what left the group: 10.0.0.9" in r.stdout
    sentinel_calls = [c for c in calls(stub) if c.startswith("sentinel") and "get-master" not in c]
    assert sentinel_calls[-1] == "sentinel flushconfig"
    assert calls(stub)[:4] == ["acl setuser default on resetpass #h1 ~* &* +@all",
                               "-x sentinel set chirp-lab auth-pass <pw>", "-x sentinel config set sentinel-pass <pw>",
                               "sentinel set chirp-lab quorum 2 parallel-syncs 1"]
    assert "sentinel reset chirp-lab" in sentinel_calls


def test_sync_leaves_a_sentinel_that_knows_only_members_alone(stub: Path) -> None:
    (stub / "sentinels").write_text("name\na\nip\n10.0.0.2\nport\n26379\nname\nb\nip\n10.0.0.3\nport\n26379\n")
    members = tuple(__import__("ipaddress").IPv4Address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
    r = run(sync_script(26379, "chirp-lab", (("quorum", "2"),), members, 2, ("h1",)), stub)
    assert r.returncode == 0, r.stderr
    assert not any("sentinel reset" in c for c in calls(stub))


def test_login_takes_the_new_password_else_the_previous_one_else_says_neither(stub: Path) -> None:
    (stub / "previous").write_text("old\n")
    (stub / "accepts").write_text("old")
    r = run(f"{LOGIN} 6379 sentinel flushconfig", stub)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    (stub / "accepts").write_text("nobody")
    r = run(f"{LOGIN} 6379 sentinel flushconfig", stub)
    assert r.returncode == 1 and "takes neither" in r.stderr


def test_auth_makes_the_acl_take_both_hashes_and_masterauth_the_password_in_use(stub: Path) -> None:
    (stub / "previous").write_text("old\n")
    r = run(auth_script(6379, ("h-new", "h-old")), stub)
    assert r.returncode == 0, r.stderr
    assert calls(stub) == ["acl setuser default on resetpass #h-new #h-old ~* &* +@all",
                           "-x config set masterauth <old>"]
