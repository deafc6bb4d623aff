"""etcd membership changes: decided from the hosts' facts (join, remove, bootstrap), and the join and removal
scripts run for real under `sh` against a stand-in `etcdctl` that records its calls."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from deploykit.inventory import load_inventory
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.etcd import state as etcd
from deploykit.services.etcd.config import etcd_config
from deploykit.services.etcd.membership import (
    DATA_FACT,
    JOIN_ENV,
    JOIN_SCRIPT,
    MEMBERS_FACT,
    MEMBERS_FILE,
    REMOVE_SCRIPT,
    join_script,
    parse_members,
    remove_others_script,
)

REPO = Path(__file__).resolve().parents[3]
DATA_DIR = "/var/lib/etcd/chirp-lab-etcd"


def grown_lab(tmp_path: Path) -> ConfigContext:
    """lab.yml plus two etcd-only hosts (5 members)."""
    text = (REPO / "inventories" / "lab.yml").read_text().replace(
        "  rbx1-web-[1:2]:", "  fra1-etcd-1: {address: 10.77.1.41, site: fra1, roles: [etcd]}\n"
                             "  rbx1-etcd-1: {address: 10.77.2.41, site: rbx1, roles: [etcd]}\n  rbx1-web-[1:2]:", 1)
    path = tmp_path / "lab.yml"
    path.write_text(text)
    inv = load_inventory(path)
    return ConfigContext(inv, plan_placement(inv), lambda s: Secret(s, "x"))


def member_list(*names: str, learner: str = "") -> str:
    return json.dumps({"header": {}, "members": [
        {"ID": 1000 + i, "name": n, "peerURLs": [f"http://x:{i}"], "isLearner": n == learner}
        for i, n in enumerate(names)]})


def with_facts(ctx: ConfigContext, facts: dict[str, dict[str, str]]) -> ConfigContext:
    return ConfigContext(ctx.inv, ctx.placement, ctx.secret, facts=facts)


RUNNING = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")


def running_cluster(extra: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    facts = {n: {MEMBERS_FACT: member_list(*RUNNING, *extra), DATA_FACT: f"dirs: {DATA_DIR}"} for n in RUNNING}
    return {**facts, "fra1-etcd-1": {DATA_FACT: "dirs:"}, "rbx1-etcd-1": {DATA_FACT: "dirs: /var/lib/etcd/default"}}


def test_the_data_fact_tells_none_from_unknown(tmp_path: Path) -> None:
    from deploykit.services.etcd.membership import READ_DATA, has_data

    out = subprocess.run(["/bin/sh", "-c", READ_DATA.replace("/var/lib/etcd", str(tmp_path))],
                         capture_output=True, text=True, check=True).stdout
    assert out == "dirs:" and has_data(out, f"{tmp_path}/x") is False
    (tmp_path / "x" / "member").mkdir(parents=True)
    out = subprocess.run(["/bin/sh", "-c", READ_DATA.replace("/var/lib/etcd", str(tmp_path))],
                         capture_output=True, text=True, check=True).stdout
    assert has_data(out, f"{tmp_path}/x") is True and has_data(None, "/x") is None


def test_member_ids_are_read_in_hex_as_etcdctl_takes_them() -> None:
    (m,) = parse_members(json.dumps({"members": [{"ID": 10276657743932975437, "name": "a", "isLearner": True}]}))
    assert (m.id, m.name, m.learner) == ("8e9e05c52164694d", "a", True)
    assert parse_members("") is None and parse_members("{not json") is None


def test_a_new_host_joins_the_running_cluster_through_the_members_api(tmp_path: Path) -> None:
    ctx = with_facts(grown_lab(tmp_path), running_cluster())
    new = etcd_config(ctx, ctx.inv.host("fra1-etcd-1"))
    assert new.joins and new.members == ("ams1-data-1", "fra1-data-1", "fra1-etcd-1", "rbx1-data-1", "rbx1-etcd-1")
    state = etcd.desired(new)
    (join,) = [f for f in state.files if f.path == JOIN_SCRIPT]
    assert join.after_change == JOIN_SCRIPT and "--learner" in join.content
    # it asks the running voting members over the mesh, never the other host joining in the same apply
    assert new.others == ",".join(f"http://{ctx.inv.host(n).mesh_address}:2379" for n in RUNNING)
    assert ctx.inv.host("rbx1-etcd-1").mesh_address.exploded not in join.content
    (wait,) = state.waits
    assert "member promote" in wait.command and wait.timeout_s == 300
    assert wait.command.index(new.others) < wait.command.index("member promote")  # asked of the voters
    for name in RUNNING:  # the running members: nothing that restarts them, no join
        old = etcd.desired(etcd_config(ctx, ctx.inv.host(name)))
        assert not etcd_config(ctx, ctx.inv.host(name)).joins
        assert [f.path for f in old.files if f.notify] == ["/etc/default/etcd"]
        assert "ETCD_INITIAL_CLUSTER" not in old.files[0].content


def test_without_a_running_cluster_every_member_bootstraps_together(tmp_path: Path) -> None:
    ctx = grown_lab(tmp_path)  # no facts: nothing runs (a first deploy, or an offline plan)
    assert not any(etcd_config(ctx, h).joins for h in ctx.inv.with_role("etcd"))
    # Debian's package starts a one-member etcd of its own on install: its list does not count as our cluster
    debian = {n: {MEMBERS_FACT: member_list("default"), DATA_FACT: "dirs: /var/lib/etcd/default"} for n in RUNNING}
    debian["fra1-etcd-1"] = {DATA_FACT: "dirs:"}
    assert not etcd_config(with_facts(ctx, debian), ctx.inv.host("fra1-etcd-1")).joins


def test_one_surviving_member_removes_the_members_the_inventory_no_longer_has(tmp_path: Path) -> None:
    ctx = with_facts(grown_lab(tmp_path), running_cluster(extra=("old-etcd-1",)))
    removers = []
    for host in ctx.inv.with_role("etcd"):
        cfg = etcd_config(ctx, host)
        members = next(f for f in etcd.desired(cfg).files if f.path == MEMBERS_FILE)
        if cfg.removes:
            removers.append(host.name)
            assert cfg.removes == ("old-etcd-1",)
            assert members.after_change == REMOVE_SCRIPT and "# removing: old-etcd-1" in members.content
        else:
            assert members.after_change is None
    assert removers == ["ams1-data-1"]  # the first running member with data, by name


# --- the scripts, for real ------------------------------------------------------------------------------------

FAKE_ETCDCTL = r"""#!/bin/sh
echo "$*" >> "$LOG"
case "$*" in
  *"member list"*)
    if [ -n "${LIST_FAILS:-}" ] && [ ! -e "$LIST.failed" ]; then
      touch "$LIST.failed"; echo "Error: context deadline exceeded" >&2; exit 1
    fi
    cat "$LIST" ;;
  *"member remove"*)
    id=$(echo "$*" | awk '{print $NF}'); grep -v "^$id," "$LIST" > "$LIST.new"; mv "$LIST.new" "$LIST"
    echo "Member removed" ;;
  *"member add"*)
    n=$(cat "$ADDS" 2>/dev/null || echo 0); echo $((n + 1)) > "$ADDS"
    if [ -n "${REFUSE:-}" ]; then echo "Error: etcdserver: permission denied" >&2; exit 1; fi
    if [ -n "${LANDS_LATE:-}" ] && [ "$n" -eq 0 ]; then  # the add lands, the answer comes too late
      echo "9z, unstarted, , http://10.77.128.9:2380, , true" >> "$LIST"
      echo '{"level":"warn","msg":"retrying of unary invoker failed"}' >&2
      echo "Error: context deadline exceeded" >&2; exit 1
    fi
    if [ "$n" -lt "${BUSY:-0}" ]; then
      [ "$n" -eq 0 ] && echo "Error: etcdserver: unhealthy cluster" >&2
      [ "$n" -gt 0 ] && echo "Error: etcdserver: too many learner members in cluster" >&2
      exit 1
    fi
    printf 'Member ced000fda4d05edf added to cluster 8c4281cc65c7b112\n\n'
    printf 'ETCD_NAME="fra1-etcd-1"\nETCD_INITIAL_CLUSTER="a=http://10.77.128.1:2380,fra1-etcd-1=http://10.77.128.9:2380"\n'
    printf 'ETCD_INITIAL_ADVERTISE_PEER_URLS="http://10.77.128.9:2380"\nETCD_INITIAL_CLUSTER_STATE="existing"\n' ;;
esac
"""


def run_script(script: str, tmp_path: Path, listed: str, busy: int = 0, **flags: str) -> tuple[
        subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "etcdctl").write_text(FAKE_ETCDCTL)
    (bin_dir / "etcdctl").chmod(0o755)
    (tmp_path / "list").write_text(listed)
    (tmp_path / "sleep").mkdir(exist_ok=True)
    script = script.replace(JOIN_ENV, str(tmp_path / "join.env")).replace(MEMBERS_FILE, str(tmp_path / "members"))
    script = script.replace(DATA_DIR, str(tmp_path / "data")).replace("sleep 2", "sleep 0.01")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(tmp_path / "log"),
           "LIST": str(tmp_path / "list"), "ADDS": str(tmp_path / "adds"), "BUSY": str(busy), **flags}
    done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, check=False)
    log = (tmp_path / "log").read_text().splitlines() if (tmp_path / "log").exists() else []
    return done, [line.split("--command-timeout=10s ", 1)[-1] for line in log]


def test_the_join_adds_a_learner_and_keeps_what_the_api_answered(tmp_path: Path) -> None:
    script = join_script("fra1-etcd-1", "http://10.77.128.9:2380", "http://10.77.128.1:2379", DATA_DIR)
    listed = "1a, started, a, http://10.77.128.1:2380, http://10.77.128.1:2379, false\n"
    done, calls = run_script(script, tmp_path, listed, busy=2)  # another learner catches up: refused twice
    assert done.returncode == 0, done.stderr
    add = "member add fra1-etcd-1 --peer-urls=http://10.77.128.9:2380 --learner"
    assert calls == ["member list -w simple", add] * 3
    assert (tmp_path / "join.env").read_text() == (
        "ETCD_INITIAL_CLUSTER=a=http://10.77.128.1:2380,fra1-etcd-1=http://10.77.128.9:2380\n"
        "ETCD_INITIAL_CLUSTER_STATE=existing\n")


def test_a_join_the_cluster_answered_too_late_is_tried_again_and_its_landed_member_replaced(tmp_path: Path) -> None:
    """CI: `member add` of a host joining right after the mesh phase timed out ("context deadline exceeded") and
    the apply failed; the add may still land (an unstarted learner with the host's peer URL and no name)."""
    script = join_script("fra1-etcd-1", "http://10.77.128.9:2380", "http://10.77.128.1:2379", DATA_DIR)
    listed = "1a, started, a, http://10.77.128.1:2380, http://10.77.128.1:2379, false\n"
    done, calls = run_script(script, tmp_path, listed, LIST_FAILS="1", LANDS_LATE="1")
    assert done.returncode == 0, done.stderr
    add = "member add fra1-etcd-1 --peer-urls=http://10.77.128.9:2380 --learner"
    assert calls == ["member list -w simple", "member list -w simple", add,  # the list, then the add, timed out
                     "member list -w simple", "member remove 9z", add]
    assert (tmp_path / "join.env").exists() and "9z" not in (tmp_path / "list").read_text()


def test_a_join_refused_for_good_fails_at_once_with_etcds_words(tmp_path: Path) -> None:
    script = join_script("fra1-etcd-1", "http://10.77.128.9:2380", "http://10.77.128.1:2379", DATA_DIR)
    done, calls = run_script(script, tmp_path, "", REFUSE="1")
    assert done.returncode == 1 and done.stderr.strip() == "Error: etcdserver: permission denied"
    assert calls == ["member list -w simple", "member add fra1-etcd-1 --peer-urls=http://10.77.128.9:2380 --learner"]


def test_a_wiped_host_removes_its_old_member_before_joining_again(tmp_path: Path) -> None:
    script = join_script("fra1-etcd-1", "http://10.77.128.9:2380", "http://10.77.128.1:2379", DATA_DIR)
    listed = ("1a, started, a, http://10.77.128.1:2380, http://10.77.128.1:2379, false\n"
              "2b, started, fra1-etcd-1, http://10.77.128.9:2380, http://10.77.128.9:2379, false\n")
    done, calls = run_script(script, tmp_path, listed)
    assert done.returncode == 0, done.stderr
    assert calls == ["member list -w simple", "member remove 2b",
                     "member add fra1-etcd-1 --peer-urls=http://10.77.128.9:2380 --learner"]


def test_a_host_with_data_never_joins_again(tmp_path: Path) -> None:
    (tmp_path / "data" / "member").mkdir(parents=True)
    script = join_script("fra1-etcd-1", "http://10.77.128.9:2380", "http://10.77.128.1:2379", DATA_DIR)
    done, calls = run_script(script, tmp_path, "")
    assert done.returncode == 0 and calls == []


def test_removal_takes_out_only_named_members_the_inventory_no_longer_has(tmp_path: Path) -> None:
    (tmp_path / "members").write_text("a\nb\n")
    listed = ("1a, started, a, u1, c1, false\n3c, started, old, u3, c3, false\n"
              "4d, unstarted, , u4, , true\n2b, started, b, u2, c2, false\n")  # 4d: a host joining right now
    done, calls = run_script(remove_others_script("http://127.0.0.1:2379"), tmp_path, listed)
    assert done.returncode == 0, done.stderr
    assert calls == ["member list -w simple", "member remove 3c"]
    assert "removing etcd member old (3c)" in done.stdout
