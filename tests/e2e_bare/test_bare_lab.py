"""Issue 9 end to end: the first deploy onto servers as bare as a provider's fresh Debian, every package
installed by deploykit's own install path (from the lab's package repository), checked with the services'
own tools."""

from __future__ import annotations

import subprocess
import time

import pytest

from deploykit.lab import image, repository
from deploykit.lab.lab import Lab
from deploykit.lab.smoke import smoke_test
from tests.e2e.conftest import LAB_INVENTORY, deploykit

pytestmark = pytest.mark.e2e

INV = str(LAB_INVENTORY)
DATA = ("ams1-data-1", "fra1-data-1", "rbx1-data-1")
LOCK_HOLDER = "fra1-web-1"
LOCK_S = 20
# Holds apt's lists lock as a provider's unattended-upgrades would (apt takes it with fcntl, as lockf does).
HOLD_LOCK = ("nohup python3 -c \"import fcntl, time; f = open('/var/lib/apt/lists/lock', 'w'); "
             f"fcntl.lockf(f, fcntl.LOCK_EX); time.sleep({LOCK_S})\" >/dev/null 2>&1 &")


def ok(lab: Lab, host: str, cmd: str) -> str:
    r = lab.ssh(host, cmd, timeout=60)
    assert r.returncode == 0, f"{host}: {cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_before_the_apply_no_service_package_is_installed_anywhere(bare_lab: Lab) -> None:
    base = bare_lab.state.base / "var/lib/dpkg/status"  # what the bare image itself holds (procps, via systemd)
    preinstalled = repository.package_names(base.read_text(), installed_only=True)
    wanted = [p for p in repository.package_set() if p not in preinstalled]
    assert len(wanted) > 10
    check = " ".join(f"dpkg -s {p} >/dev/null 2>&1 && echo {p};" for p in wanted) + " true"
    for s in bare_lab.layout.servers:
        assert ok(bare_lab, s.name, check).split() == [], f"{s.name} has service packages before any apply"
        assert ok(bare_lab, s.name, "cat /etc/apt/sources.list.d/*").strip() == (
            f"deb [trusted=yes] file:{image.REPO_MOUNT} ./")


@pytest.fixture(scope="module")
def first_apply(bare_lab: Lab, measure) -> subprocess.CompletedProcess[str]:
    ok(bare_lab, LOCK_HOLDER, HOLD_LOCK)  # one server's apt is busy, as on a provider's first boot
    assert ok(bare_lab, LOCK_HOLDER, "sleep 1; ls /var/lib/apt/lists/lock")
    t0 = time.monotonic()
    r = deploykit("apply", INV, "--yes", "--no-diff", timeout=1800)
    measure("first apply of the BARE lab inventory (every package installed)", f"{time.monotonic() - t0:.1f} s")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return r


def test_the_first_apply_installs_everything_even_with_apts_lock_held(first_apply) -> None:
    """Without waiting for the lock, `apt-get update` on LOCK_HOLDER would have failed at once."""
    assert "9 hosts: 9 changed" in first_apply.stdout


def test_a_second_plan_changes_nothing(first_apply) -> None:
    r = deploykit("plan", INV)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "9 hosts: 0 to change, 9 unchanged. No changes." in r.stdout


def test_a_post_written_through_one_site_is_read_through_another(first_apply) -> None:
    from deploykit.inventory import load_inventory

    result = smoke_test(load_inventory(LAB_INVENTORY))
    assert result.ok, "\n".join(result.lines)


def test_no_postgresql_cluster_but_patronis_exists(bare_lab: Lab, first_apply) -> None:
    """createcluster.d was in place before postgresql-15 was installed: Debian's default cluster never existed."""
    for host in DATA:
        assert ok(bare_lab, host, "pg_lsclusters -h").strip() == ""
        assert ok(bare_lab, host, "ls /etc/postgresql/15 2>/dev/null; true").strip() == ""
        assert ok(bare_lab, host, "ls /var/lib/postgresql/15").split() == ["chirp-lab"]  # Patroni's data dir
        assert "Leader" in ok(bare_lab, host, "patronictl -c /etc/patroni/config.yml list") or host != DATA[0]


def test_no_service_was_left_enabled_that_deploykit_does_not_run(bare_lab: Lab, first_apply) -> None:
    """Packages enable units on install; the only PostgreSQL that runs is Patroni's, under patroni.service."""
    for host in DATA:
        assert ok(bare_lab, host, "systemctl is-active postgresql@15-main.service; true").strip() != "active"
        assert ok(bare_lab, host, "systemctl is-active patroni etcd redis-server redis-sentinel").split() == [
            "active"] * 4
