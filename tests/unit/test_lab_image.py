from __future__ import annotations

from pathlib import Path

import pytest

from deploykit.lab import image


def test_debootstrap_from_the_given_mirror() -> None:
    assert image.debootstrap_argv(Path("/b"), "http://m/debian") == [
        "debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus,ca-certificates", "bookworm", "/b",
        "http://m/debian",
    ]  # fmt: skip


def test_apt_installs_every_package_without_recommends() -> None:
    update, install, clean = image.apt_argvs(Path("/b"))
    assert update[:2] == ["chroot", "/b"] and update[-1] == "update"
    assert install[install.index("install") + 1 :] == ["--no-install-recommends", *image.PACKAGES]
    for needed in ("openssh-server", "postgresql-15", "patroni", "etcd-server", "redis-sentinel", "python3-psycopg"):
        assert needed in image.PACKAGES


def test_base_name_changes_with_the_package_list(monkeypatch: pytest.MonkeyPatch) -> None:
    before = image.base_path(Path("/c"))
    assert before.parent == Path("/c") and before.name.startswith("base-bookworm-")
    monkeypatch.setattr(image, "FULL", image.Recipe("full", (*image.PACKAGES, "htop"), image.BASE_FILES,
                                                    image.BUILD_FILES, image.REMOVED_AFTER_BUILD))
    assert image.base_path(Path("/c"), image.FULL) != before


def test_the_full_image_holds_every_service_package_and_the_bare_one_none() -> None:
    from deploykit.services import SERVICES

    declared = {p for s in SERVICES for p in s.packages}
    assert declared <= set(image.PACKAGES)
    assert not declared & set(image.BARE.packages) - {"openssh-server"}  # sshd is how a provider's server is reached
    assert image.base_path(Path("/c"), image.BARE).name.startswith("base-bare-bookworm-")
    assert image.base_path(Path("/c"), image.BARE) != image.base_path(Path("/c"))


def test_a_bare_servers_only_apt_source_is_the_labs_repository() -> None:
    assert image.BARE.base_files["etc/apt/sources.list.d/deploykit-lab.list"] == (
        "deb [trusted=yes] file:/srv/deploykit-lab-repo ./\n")
    assert "etc/apt/sources.list.d/*.sources" in image.BARE.removed  # the build's mirror is gone
    assert "etc/postgresql-common/createcluster.d/deploykit-lab.conf" not in image.BARE.build_files


def test_systemctl_disables_only_present_units() -> None:
    argvs = image.systemctl_argvs(Path("/b"), lambda unit: unit in {"haproxy.service", "etcd.service"})
    assert argvs == [
        ["systemctl", "--root=/b", "enable", "systemd-networkd.service", "ssh.service"],
        ["systemctl", "--root=/b", "disable", "haproxy.service", "etcd.service"],
    ]


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822_and_one_line_sources() -> None:
    assert image.mirror_from_sources(DEB822, deb822=True) == "http://deb.debian.org/debian"
    lines = (
        "deb http://security.debian.org/ bookworm-security main\n"
        "deb [arch=amd64] http://ftp.de.debian.org/debian bookworm main\n"
    )
    assert image.mirror_from_sources(lines, deb822=False) == "http://ftp.de.debian.org/debian"
    assert image.mirror_from_sources("deb http://x/ubuntu jammy main\n", deb822=False) is None


def test_host_mirror_falls_back_to_debian(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    assert image.host_mirror(tmp_path) == image.DEFAULT_MIRROR
