"""The bare lab's package repository: its package set comes from the services, and it must offer each one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from deploykit.apply.phases import desired_states
from deploykit.inventory import load_inventory
from deploykit.lab import image, repository
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.services import SERVICES

REPO = Path(__file__).resolve().parents[2]


def test_the_package_set_is_every_services_declared_packages() -> None:
    assert repository.package_set() == tuple(sorted({p for s in SERVICES for p in s.packages}))


@pytest.mark.parametrize("inventory", ["lab.yml", "example.yml"])
def test_every_package_a_desired_state_installs_is_in_the_package_set(inventory: str) -> None:
    inv = load_inventory(REPO / "inventories" / inventory)
    states = desired_states(inv, plan_placement(inv), lambda n: Secret(n, "s3cr3t" + n.replace("-", "")))
    wanted = {p for per_host in states.values() for s in per_host for p in s.packages}
    assert wanted and wanted <= set(repository.package_set())


def test_a_new_package_of_a_service_builds_a_new_repository() -> None:
    assert repository.repo_hash(("a", "b")) != repository.repo_hash(("a", "b", "c"))
    assert repository.repo_hash(("b", "a")) == repository.repo_hash(("a", "b"))


INDEX = """Package: etcd-server
Version: 3.4.23-4+b6
Filename: ./etcd-server_3.4.23-4+b6_amd64.deb

Package: patroni
Version: 3.0.2-1
"""
STATUS = """Package: python3
Status: install ok installed

Package: nftables
Status: deinstall ok config-files
"""


def test_a_package_neither_in_the_repository_nor_in_the_base_is_missing() -> None:
    assert repository.missing_packages(("etcd-server", "patroni", "python3"), INDEX, STATUS) == []
    assert repository.missing_packages(("etcd-server", "nftables", "haproxy"), INDEX, STATUS) == ["haproxy", "nftables"]


def test_package_stanza_and_release_file() -> None:
    stanza = repository.package_stanza("Package: x\nVersion: 1\n", "x_1_all.deb", 10, "ab" * 32, "cd" * 16)
    assert stanza == (f"Package: x\nVersion: 1\nFilename: ./x_1_all.deb\nSize: 10\nMD5sum: {'cd' * 16}\n"
                      f"SHA256: {'ab' * 32}\n")
    release = repository.release_file(b"idx", "Sun, 29 Nov 2026 20:00:00 UTC")
    assert f" {hashlib.sha256(b'idx').hexdigest()} 3 Packages" in release.splitlines()


def test_a_built_repository_on_this_machine_offers_every_service_package() -> None:
    """Checks the real repository when `lab up --bare` built one here (CI builds it in the bare e2e run)."""
    repo, base = repository.repo_path(), image.base_path(recipe=image.BARE)
    if not repository.is_complete(repo) or not (base / "var/lib/dpkg/status").is_file():
        pytest.skip(f"no bare lab repository built on this machine ({repo})")
    index = (repo / repository.INDEX).read_text()
    assert repository.missing_packages(repository.package_set(), index,
                                       (base / "var/lib/dpkg/status").read_text()) == []
