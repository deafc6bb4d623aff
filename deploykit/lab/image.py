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
from dataclasses import dataclass
from pathlib import Path

from deploykit.lab.proc import run

CACHE_DIR = Path("/var/cache/deploykit/lab")
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

BOOTSTRAP_PACKAGES: tuple[str, ...] = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
# What a hosting provider's fresh Debian 12 holds (minbase + systemd + SSH + python3 + the network tools).
PROVIDER_PACKAGES: tuple[str, ...] = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "ca-certificates", "iproute2", "iputils-ping",
)  # fmt: skip
# What the end-to-end tests use on the servers beyond the services' own packages (psql, sudo, ping ...).
LAB_TOOLS: tuple[str, ...] = (
    *PROVIDER_PACKAGES, "sudo", "procps", "curl", "postgresql-client-15", "python3-psycopg",
)  # fmt: skip


def service_packages() -> tuple[str, ...]:
    """Every Debian package a registered service installs (`Service.packages`): derived, never a second list."""
    from deploykit.services import SERVICES

    return tuple(sorted({p for s in SERVICES for p in s.packages}))


# The preinstalled lab: every service's packages are in the image, so a first apply installs nothing.
PACKAGES: tuple[str, ...] = tuple(dict.fromkeys((*LAB_TOOLS, *service_packages())))
# Units the packages enable that must not run until a deploykit role configures them (or ever, offline).
DISABLED_UNITS: tuple[str, ...] = (
    "haproxy.service", "keepalived.service", "postgresql.service", "patroni.service", "etcd.service", "pdns.service",
    "pgbouncer.service", "redis-server.service", "redis-sentinel.service", "nftables.service", "apt-daily.timer",
    "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer", "e2scrub_reap.service",
    "fstrim.timer", "logrotate.timer", "man-db.timer", "systemd-networkd-wait-online.service",
    "getty@tty1.service", "console-getty.service",
)  # fmt: skip
ENABLED_UNITS: tuple[str, ...] = ("systemd-networkd.service", "ssh.service")

# Where a bare server finds the lab's package repository (bind-mounted read-only by `lab up --bare`).
REPO_MOUNT = "/srv/deploykit-lab-repo"

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
# A bare server's apt sources: the lab's own repository only (lab servers have no route out).
BARE_FILES: dict[str, str] = {
    **BASE_FILES,
    "etc/apt/sources.list.d/deploykit-lab.list": f"deb [trusted=yes] file:{REPO_MOUNT} ./\n",
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


@dataclass(frozen=True)
class Recipe:
    """What goes into one kind of base image."""

    kind: str  # "full": every service package preinstalled; "bare": as a provider delivers a server
    packages: tuple[str, ...]
    base_files: dict[str, str]
    build_files: dict[str, str]
    removed: tuple[str, ...]


FULL = Recipe("full", PACKAGES, BASE_FILES, BUILD_FILES, REMOVED_AFTER_BUILD)
# Bare: nothing of the services, no build-time createcluster.d (deploykit's install path must handle it), and
# apt pointing at the lab's repository only (the build's mirror sources are removed).
BARE = Recipe("bare", PROVIDER_PACKAGES, BARE_FILES, {"usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n"},
              (*REMOVED_AFTER_BUILD, "etc/apt/sources.list.d/*.sources"))


APT_ENV = ("env", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin")


def debootstrap_argv(root: Path, mirror: str) -> list[str]:
    return [
        "debootstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_PACKAGES)}", SUITE, str(root), mirror,
    ]  # fmt: skip


def apt_argvs(root: Path, recipe: Recipe = FULL) -> list[list[str]]:
    apt = ["chroot", str(root), *APT_ENV, "apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold"]
    return [[*apt, "update"], [*apt, "install", "--no-install-recommends", *recipe.packages], [*apt, "clean"]]


def systemctl_argvs(root: Path, present: Callable[[str], bool]) -> list[list[str]]:
    """Disable the units the base has (a unit a package did not ship is skipped); enable sshd and networkd."""
    disable = [u for u in DISABLED_UNITS if present(u)]
    argvs = [["systemctl", f"--root={root}", "enable", *ENABLED_UNITS]]
    if disable:
        argvs.append(["systemctl", f"--root={root}", "disable", *disable])
    return argvs


def recipe_hash(recipe: Recipe = FULL) -> str:
    """Version of the base: changes with the package lists, units, files and commands of the recipe."""
    data = {
        "suite": SUITE,
        "debootstrap": debootstrap_argv(Path("ROOT"), "MIRROR"),
        "apt": apt_argvs(Path("ROOT"), recipe),
        "packages": recipe.packages,
        "disabled": DISABLED_UNITS,
        "enabled": ENABLED_UNITS,
        "files": recipe.base_files,
        "build_files": recipe.build_files,
        "removed": recipe.removed,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def base_path(cache: Path = CACHE_DIR, recipe: Recipe = FULL) -> Path:
    prefix = "base" if recipe.kind == FULL.kind else f"base-{recipe.kind}"
    return cache / f"{prefix}-{SUITE}-{recipe_hash(recipe)}"


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


def ensure_base(report: Callable[[str], None] = print, cache: Path = CACHE_DIR, recipe: Recipe = FULL) -> Path:
    """The base directory, built first if this recipe has none cached yet."""
    final = base_path(cache, recipe)
    if (final / "etc/deploykit-lab-base").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(".build-*"):  # an interrupted earlier build
        _remove_tree(stale)
    tmp = cache / f".build-{final.name}-{os.getpid()}"
    started = time.monotonic()
    mirror = host_mirror()
    report(f"building the lab's {recipe.kind} base image {final.name} from {mirror} (once; a few minutes)")
    try:
        _build(tmp, mirror, report, recipe)
        os.rename(tmp, final)
    except BaseException:
        _remove_tree(tmp)
        raise
    report(f"base image built in {time.monotonic() - started:.0f} s: {final}")
    return final


def _build(root: Path, mirror: str, report: Callable[[str], None], recipe: Recipe = FULL) -> None:
    report("debootstrap ...")
    run(debootstrap_argv(root, mirror))
    for rel, content in recipe.build_files.items():
        _write(root / rel, content, mode=0o755 if rel.startswith("usr/sbin") else 0o644)
    use_host_mirror(root, mirror)
    proc = root / "proc"
    run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        for argv in apt_argvs(root, recipe):
            report(f"apt-get {argv[len(APT_ENV) + 7]} ...")
            run(argv)
    finally:
        run(["umount", "-l", str(proc)], check=False)
    for argv in systemctl_argvs(root, lambda unit: _unit_present(root, unit)):
        run(argv)
    for pattern in recipe.removed:
        for path in root.glob(pattern):
            if not path.is_dir():
                path.unlink()
    for rel, content in recipe.base_files.items():
        _write(root / rel, content.replace("{hash}", recipe_hash(recipe)))


def use_host_mirror(root: Path, mirror: str) -> None:
    """Point a root being built at this machine's Debian mirror (its apt sources) and resolver."""
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    sources = Path("/etc/apt/sources.list.d")
    for src in sources.glob("*.sources"):
        shutil.copy2(src, root / "etc/apt/sources.list.d" / src.name)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    if not any(sources.glob("*.sources")):
        _write(root / "etc/apt/sources.list", f"deb {mirror} {SUITE} main\n")


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
