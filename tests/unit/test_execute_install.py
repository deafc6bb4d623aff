"""The package install command, run for real by `sh` against a fake `apt-get` (first in PATH) that plays a
provider's fresh server: missing lists, apt's lock held by unattended-upgrades, a mirror that fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from deploykit.execute.steps import install_packages

FAKE_APT = r"""#!/bin/sh
# Records each call; the behaviour file says what the Nth call does: "ok", "lock", "fetch-fail", "locate-fail".
n=$(($(cat "$DIR/count" 2>/dev/null || echo 0) + 1)); echo $n > "$DIR/count"
echo "$*" >> "$DIR/calls"
[ -e "$DIR/policy-rc.d" ] && echo "policy present" >> "$DIR/calls"
what=$(sed -n "${n}p" "$DIR/behaviour"); what=${what:-ok}
case "$what" in
  lock) echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4321 (unattended-upgr)" >&2
        echo "E: Unable to lock directory /var/lib/apt/lists/" >&2; exit 100 ;;
  fetch-fail) echo "Err:1 http://deb.example/debian bookworm/main amd64 etcd-server amd64 3.4.23 404 Not Found" >&2
        echo "E: Failed to fetch http://deb.example/debian/pool/main/e/etcd/etcd-server_3.4.23_amd64.deb  404" >&2
        exit 100 ;;
  locate-fail) echo "E: Unable to locate package etcd-server" >&2; exit 100 ;;
esac
exit 0
"""


def run(tmp_path: Path, behaviour: list[str], *, fresh: bool = False, lock_wait_s: int = 30,
        ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT)
    apt.chmod(0o755)
    (tmp_path / "behaviour").write_text("\n".join(behaviour) + "\n")
    stamp = tmp_path / "state" / "apt-updated"
    if fresh:
        stamp.parent.mkdir()
        stamp.touch()
    cmd = install_packages(("etcd-server", "etcd-client"), policy_rc=str(tmp_path / "policy-rc.d"),
                           stamp=str(stamp), lock_wait_s=lock_wait_s, lock_retry_s=0)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DIR": str(tmp_path)}
    done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines() if (tmp_path / "calls").exists() else []
    return done, calls


@pytest.fixture(autouse=True)
def needs_sources_dir() -> None:
    if not Path("/etc/apt/sources.list.d").is_dir():
        pytest.skip("needs a Debian-like /etc/apt")


def test_a_fresh_server_gets_its_lists_then_the_packages_with_services_kept_from_starting(tmp_path: Path) -> None:
    done, calls = run(tmp_path, ["ok", "ok"])
    assert done.returncode == 0, done.stderr
    assert calls == [
        "-o DPkg::Lock::Timeout=60 -o Acquire::Retries=3 update -qq", "policy present",
        "-o DPkg::Lock::Timeout=60 -o Acquire::Retries=3 install -y -qq --no-install-recommends etcd-server "
        "etcd-client", "policy present",
    ]
    assert not (tmp_path / "policy-rc.d").exists()  # removed afterwards
    assert (tmp_path / "state" / "apt-updated").exists()


def test_fresh_lists_are_not_fetched_again(tmp_path: Path) -> None:
    done, calls = run(tmp_path, ["ok"], fresh=True)
    assert done.returncode == 0, done.stderr
    assert [c.split()[4] for c in calls if "Lock" in c] == ["install"]


def test_lists_thought_fresh_are_fetched_again_when_a_package_cannot_be_found(tmp_path: Path) -> None:
    done, calls = run(tmp_path, ["locate-fail", "ok", "ok"], fresh=True)
    assert done.returncode == 0, done.stderr
    assert [c.split()[4] for c in calls if "Lock" in c] == ["install", "update", "install"]


def test_apts_lock_held_by_unattended_upgrades_is_waited_for(tmp_path: Path) -> None:
    done, calls = run(tmp_path, ["lock", "lock", "ok", "ok"])
    assert done.returncode == 0, done.stderr
    assert [c.split()[4] for c in calls if "Lock" in c] == ["update", "update", "update", "install"]


def test_a_lock_held_too_long_fails_with_apts_line_and_deploykits(tmp_path: Path) -> None:
    done, _ = run(tmp_path, ["lock"] * 50, lock_wait_s=0)
    assert done.returncode == 100
    lines = done.stderr.splitlines()
    assert lines[0] == "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4321 (unattended-upgr)"
    assert lines[-1] == "deploykit: gave up after 0 s waiting for apt's lock, held by another apt"
    assert not (tmp_path / "policy-rc.d").exists()


def test_a_failed_download_is_reported_with_apts_own_lines(tmp_path: Path) -> None:
    done, calls = run(tmp_path, ["ok", "fetch-fail", "ok", "fetch-fail"])
    assert done.returncode == 100
    assert [c.split()[4] for c in calls if "Lock" in c] == ["update", "install", "update", "install"]
    assert done.stderr.splitlines() == [
        "Err:1 http://deb.example/debian bookworm/main amd64 etcd-server amd64 3.4.23 404 Not Found",
        "E: Failed to fetch http://deb.example/debian/pool/main/e/etcd/etcd-server_3.4.23_amd64.deb  404",
    ]
    assert not (tmp_path / "policy-rc.d").exists()
