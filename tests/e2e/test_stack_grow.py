"""Issue 12 (its etcd part) end to end: grow the etcd cluster from 3 to 5 members and shrink it back, under a
steady write load through the VIPs, through the members API: every apply exits 0, etcd lists exactly the
inventory's members and is healthy, no running member is restarted, and the Patroni leader does not move.

Runs after test_stack_dns and before test_stack_mesh (same lab session; reuses the applied stack).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from tests.e2e.conftest import LAB_INVENTORY, deploykit, grown_inventory
from tests.e2e.test_stack_web import VIP, Loop, https, https_url, stack  # noqa: F401 (the fixture, shared)

pytestmark = pytest.mark.e2e

INV = load_inventory(LAB_INVENTORY)
OLD = [h.name for h in INV.with_role("etcd")]
NEW = ["fra1-etcd-1", "rbx1-etcd-1"]
ENTRIES = ("  fra1-etcd-1:    {address: 10.77.1.41, site: fra1, roles: [etcd]}",
           "  rbx1-etcd-1:    {address: 10.77.2.41, site: rbx1, roles: [etcd]}")
ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 --command-timeout=5s"


def ok(lab: Lab, host: str, cmd: str, timeout: float = 30) -> str:
    r = lab.ssh(host, cmd, timeout=timeout)
    assert r.returncode == 0, f"{host}: {cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def members(lab: Lab, via: str) -> dict[str, bool]:
    """Member name -> is a learner, as the cluster lists them."""
    data = json.loads(ok(lab, via, f"{ETCDCTL} member list -w json"))
    return {str(m.get("name", "")): bool(m.get("isLearner")) for m in data["members"]}


def etcd_pids(lab: Lab, hosts: list[str]) -> dict[str, str]:
    return {h: ok(lab, h, "systemctl show -p MainPID --value etcd").strip() for h in hosts}


def patroni_leader(lab: Lab) -> str:
    for m in json.loads(ok(lab, OLD[0], "patronictl -c /etc/patroni/config.yml list -f json")):
        if m.get("Role") == "Leader":
            return str(m["Member"])
    raise AssertionError("no Patroni leader")


def test_etcd_grows_to_five_members_and_back_without_restarting_one(stack: Lab, tmp_path: Path,  # noqa: F811
                                                                    measure) -> None:
    assert https("POST", https_url(VIP["fra1"], "/api/users"), {"name": "e2e-grower"})[0] in (201, 409)
    pids, leader = etcd_pids(stack, OLD), patroni_leader(stack)
    grown_path = grown_inventory(tmp_path, *ENTRIES)
    grown = Lab.for_inventory(load_inventory(grown_path))
    try:
        grown.up()
        with Loop(https_url(VIP["rbx1"], "/api/posts"), every=0.05, method="POST",
                  body={"author": "e2e-grower", "text": "while etcd grows"}) as writes:
            t0 = time.monotonic()
            r = deploykit("apply", str(grown_path), "--yes", "--no-diff")
            took_grow = time.monotonic() - t0
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        listed = members(grown, "fra1-data-1")
        assert listed == {n: False for n in [*OLD, *NEW]}, f"etcd lists {listed}"  # all voting, no learner
        ok(grown, "fra1-etcd-1", f"{ETCDCTL} endpoint health --cluster")
        assert etcd_pids(grown, OLD) == pids, "a running etcd member was restarted for the membership change"
        assert patroni_leader(grown) == leader
        assert ok(grown, "rbx1-etcd-1", "systemctl is-active etcd").strip() == "active"
        failed_grow = [c for _, c in writes.results if c != 201]
    finally:
        r_back = deploykit("apply", str(LAB_INVENTORY), "--yes", "--no-diff")
        Lab.for_inventory(INV).up()  # then the servers go (a removed member is out of the cluster first)
    assert r_back.returncode == 0, r_back.stdout[-3000:] + r_back.stderr[-3000:]
    listed = members(stack, "fra1-data-1")
    assert listed == {n: False for n in OLD}, f"etcd lists {listed} after the shrink"
    ok(stack, "ams1-data-1", f"{ETCDCTL} endpoint health --cluster")
    assert etcd_pids(stack, OLD) == pids, "a running etcd member was restarted by the shrink"
    assert patroni_leader(stack) == leader
    measure("grow etcd from 3 to 5 members (members API, learners promoted)",
            f"apply {took_grow:.1f} s; {len(failed_grow)} of {len(writes.results)} writes failed meanwhile")
    assert len(writes.results) > 50 and not failed_grow, f"writes failed while etcd grew: {failed_grow[:10]}"
