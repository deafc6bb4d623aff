"""The cached base root filesystem every lab server boots from (read-only lower layer of its overlay).

Built once with debootstrap + apt-get from the machine's own Debian mirror, into a temporary directory that
is renamed into place only when complete, so a half-built base is never used. Its name carries a hash of
the package list and the build recipe: changing either builds a new base.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from deploykit.lab.proc import run

CACHE_DIR = Path("/var/cache/deploykit/lab")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

BOOTSTRAP_PACKAGES: tuple[str, ...] = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "iputils-ping", "python3", "sudo",
    "ca-certificates", "procps", "curl", "nftables", "haproxy", "keepalived", "postgresql-15",
    "postgresql-client-15", "patroni", "python3-etcd", "etcd-server", "etcd-client", "redis-server", "redis-sentinel",
    "redis-tools", "gunicorn", "python3-flask", "python3-psycopg2", "python3-redis", "python3-psycopg", "socat",
)  # fmt: skip
# Units the packages enable that must not run until a deploykit role configures them (or ever, offline).
DISABLED_UNITS: tuple[str, ...] = (
    "haproxy.service", "keepalived.service", "postgresql.service", "patroni.service", "etcd.service",
    "redis-server.service", "redis-sentinel.service", "nftables.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "logrotate.timer", "man-db.timer", "systemd-networkd-wait-online.service",
    "getty@tty1.service", "console-getty.service",
)  # fmt: skip
ENABLED_UNITS: tuple[str, ...] = ("systemd-networkd.service", "ssh.service")

# Files written into the base (path -> content). {hash} is filled with the base's version.
BASE_FILES: dict[str, str] = {
    "etc/ssh/sshd_config.d/deploykit-lab.conf": (
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nMaxStartups 200:30:400\n"
    ),
    "etc/systemd/journald.conf.d/deploykit-lab.conf": "[Journal]\nRuntimeMaxUse=16M\nSystemMaxUse=32M\n",
    "etc/resolv.conf": "# lab servers have no DNS: every server is in /etc/hosts\n",
    "etc/machine-id": "",
    "etc/deploykit-lab-base": "{hash}\n",
}
# Only while building: no service starts inside the build chroot; no default PostgreSQL cluster.
BUILD_FILES: dict[str, str] = {
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
    "etc/postgresql-common/createcluster.d/deploykit-lab.conf": "create_main_cluster = false\n",
}
REMOVED_AFTER_BUILD: tuple[str, ...] = (
    "usr/sbin/policy-rc.d", "etc/ssh/ssh_host_*", "var/lib/apt/lists/*", "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb", "var/log/*.log", "etc/apt/sources.list",
)  # fmt: skip

APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")


def debootstrap_argv(root: Path, mirror: str) -> list[str]:
    return [
        "debootstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_PACKAGES)}", SUITE, str(root), mirror,
    ]  # fmt: skip


def apt_argvs(root: Path) -> list[list[str]]:
    apt = ["chroot", str(root), *APT_ENV, "apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold"]
    return [[*apt, "update"], [*apt, "install", "--no-install-recommends", *PACKAGES], [*apt, "clean"]]


def systemctl_argvs(root: Path, present: Callable[[str], bool]) -> list[list[str]]:
    """Disable the units the base has (a unit a package did not ship is skipped); enable sshd and networkd."""
    disable = [u for u in DISABLED_UNITS if present(u)]
    argvs = [["systemctl", f"--root={root}", "enable", *ENABLED_UNITS]]
    if disable:
        argvs.append(["systemctl", f"--root={root}", "disable", *disable])
    return argvs


def recipe_hash() -> str:
    """Version of the base: changes with the package lists, units, files and commands of the recipe."""
    recipe = {
        "suite": SUITE,
        "debootstrap": debootstrap_argv(Path("ROOT"), "MIRROR"),
        "apt": apt_argvs(Path("ROOT")),
        "packages": PACKAGES,
        "disabled": DISABLED_UNITS,
        "enabled": ENABLED_UNITS,
        "files": BASE_FILES,
        "build_files": BUILD_FILES,
        "removed": REMOVED_AFTER_BUILD,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def base_path(cache: Path = CACHE_DIR) -> Path:
    return cache / f"base-{SUITE}-{recipe_hash()}"


def mirror_from_sources(text: str, *, deb822: bool) -> str | None:
    """The machine's Debian mirror for SUITE, from a deb822 .sources file or a one-line sources.list."""
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if SUITE in fields.get("suites", "").split() and "deb" in fields.get("types", "").split():
                return fields.get("uris", "").split()[0] if fields.get("uris") else None
        return None
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) >= 3 and parts[0] == "deb":
            rest = [p for p in parts[1:] if not p.startswith("[")]
            if len(rest) >= 2 and rest[1] == SUITE:
                return rest[0]
    return None


def host_mirror(etc: Path = Path("/etc/apt")) -> str:
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        if found := mirror_from_sources(path.read_text(), deb822=True):
            return found
    for path in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]:
        if path.is_file() and (found := mirror_from_sources(path.read_text(), deb822=False)):
            return found
    return DEFAULT_MIRROR


def ensure_base(report: Callable[[str], None] = print, cache: Path = CACHE_DIR) -> Path:
    """The base directory, built first if this recipe has none cached yet."""
    final = base_path(cache)
    if (final / "etc/deploykit-lab-base").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".build-*"):  # an interrupted earlier build
        _remove_tree(stale)
    tmp = cache / f".build-{final.name}-{os.getpid()}"
    started = time.monotonic()
    mirror = host_mirror()
    report(f"building the lab's base image {final.name} from {mirror} (once; a few minutes)")
    try:
        _build(tmp, mirror, report)
        os.rename(tmp, final)
    except BaseException:
        _remove_tree(tmp)
        raise
    report(f"base image built in {time.monotonic() - started:.0f} s: {final}")
    return final


def _build(root: Path, mirror: str, report: Callable[[str], None]) -> None:
    report("debootstrap ...")
    run(debootstrap_argv(root, mirror))
    for rel, content in BUILD_FILES.items():
        _write(root / rel, content, mode=0o755 if rel.startswith("usr/sbin") else 0o644)
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    sources = Path("/etc/apt/sources.list.d")
    for src in sources.glob("*.sources"):
        shutil.copy2(src, root / "etc/apt/sources.list.d" / src.name)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    if not any(sources.glob("*.sources")):
        _write(root / "etc/apt/sources.list", f"deb {mirror} {SUITE} main\n")
    proc = root / "proc"
    run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        for argv in apt_argvs(root):
            report(f"apt-get {argv[len(APT_ENV) + 7]} ...")
            run(argv)
    finally:
        run(["umount", "-l", str(proc)], check=False)
    for argv in systemctl_argvs(root, lambda unit: _unit_present(root, unit)):
        run(argv)
    for pattern in REMOVED_AFTER_BUILD:
        for path in root.glob(pattern):
            if not path.is_dir():
                path.unlink()
    for rel, content in BASE_FILES.items():
        _write(root / rel, content.replace("{hash}", recipe_hash()))


def _unit_present(root: Path, unit: str) -> bool:
    name = unit.replace("@tty1", "@") if "@" in unit else unit
    return any((root / d / name).exists() for d in ("lib/systemd/system", "etc/systemd/system"))


def _write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(content)
    path.chmod(mode)


def _remove_tree(path: Path) -> None:
    run(["umount", "-l", str(path / "proc")], check=False)
    shutil.rmtree(path, ignore_errors=True)


def cached_bases(cache: Path = CACHE_DIR) -> list[Path]:
    return sorted(cache.glob("base-*")) + sorted(cache.glob(".build-*")) if cache.is_dir() else []


def purge(cache: Path = CACHE_DIR) -> list[Path]:
    """Remove every cached base (lab down --purge)."""
    removed = cached_bases(cache)
    for path in removed:
        _remove_tree(path)
    return removed
