"""The lab's own Debian package repository, for bare servers (which, like every lab server, have no route out).

Built once on this machine from its Debian mirror: in a scratch overlay of the bare base, `apt-get install
--download-only` of every package the registered services ask for (`Service.packages`) fetches exactly what a
bare server lacks, dependencies included; those .deb files plus a `Packages` index and a `Release` file make a
flat repository. `lab up --bare` bind-mounts it read-only into every server at REPO_MOUNT, where the bare base's
only apt source points (`deb [trusted=yes] file:/srv/deploykit-lab-repo ./`). Its name carries a hash of the bare
base and of the package set: a service asking for a new package builds a new repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from deploykit.errors import LabError
from deploykit.lab import image
from deploykit.lab.proc import run

INDEX = "Packages"
RELEASE = "Release"


def package_set() -> tuple[str, ...]:
    """What the repository must offer: every service's packages (derived from the services)."""
    return image.service_packages()


def repo_hash(packages: tuple[str, ...] | None = None) -> str:
    wanted = package_set() if packages is None else packages
    data = f"{image.recipe_hash(image.BARE)}\n" + "\n".join(sorted(wanted))
    return hashlib.sha256(data.encode()).hexdigest()[:12]


def repo_path(cache: Path = image.CACHE_DIR) -> Path:
    return cache / f"repo-{image.SUITE}-{repo_hash()}"


def package_stanza(control: str, filename: str, size: int, sha256: str, md5: str) -> str:
    """One `Packages` entry: the .deb's control fields, then where it is and its checksums."""
    fields = control.rstrip("\n")
    return f"{fields}\nFilename: ./{filename}\nSize: {size}\nMD5sum: {md5}\nSHA256: {sha256}\n"


def release_file(index: bytes, date: str) -> str:
    sha = hashlib.sha256(index).hexdigest()
    md5 = hashlib.md5(index).hexdigest()  # noqa: S324 - apt's index checksum field, not security
    return (f"Origin: deploykit-lab\nLabel: deploykit-lab\nSuite: lab\nCodename: lab\nDate: {date}\n"
            f"MD5Sum:\n {md5} {len(index)} {INDEX}\nSHA256:\n {sha} {len(index)} {INDEX}\n")


def write_index(repo: Path) -> int:
    """Write Packages and Release for the .deb files in `repo`; returns how many packages it lists."""
    stanzas = []
    debs = sorted(repo.glob("*.deb"))
    for deb in debs:
        control = run(["dpkg-deb", "--field", str(deb)]).stdout
        raw = deb.read_bytes()
        stanzas.append(package_stanza(control, deb.name, len(raw), hashlib.sha256(raw).hexdigest(),
                                      hashlib.md5(raw).hexdigest()))  # noqa: S324
    index = "\n".join(stanzas).encode()
    (repo / INDEX).write_bytes(index)
    (repo / RELEASE).write_text(release_file(index, time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime())))
    return len(debs)


def package_names(index: str, *, installed_only: bool = False) -> set[str]:
    """The `Package:` names of a Packages index (or, with installed_only, of a dpkg status file's installed
    packages)."""
    names = set()
    for stanza in index.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line[0].isspace())
        if "Package" in fields and (not installed_only or fields.get("Status") == "install ok installed"):
            names.add(fields["Package"])
    return names


def missing_packages(wanted: tuple[str, ...], index: str, base_status: str) -> list[str]:
    """The wanted packages a bare server could not install: neither in the repository nor in its base."""
    have = package_names(index) | package_names(base_status, installed_only=True)
    return sorted(set(wanted) - have)


def is_complete(repo: Path) -> bool:
    return (repo / RELEASE).is_file()


def ensure_repo(report: Callable[[str], None] = print, cache: Path = image.CACHE_DIR) -> Path:
    """The repository directory, built first if none for this bare base and package set is cached."""
    final = repo_path(cache)
    if is_complete(final):
        return final
    bare = image.ensure_base(report, cache, image.BARE)
    for stale in cache.glob(".repo-*"):
        _remove_scratch(stale)
    scratch = cache / f".repo-{final.name}-{os.getpid()}"
    started = time.monotonic()
    mirror = image.host_mirror()
    packages = package_set()
    report(f"building the lab's package repository {final.name}: {len(packages)} packages and their "
           f"dependencies from {mirror} (once)")
    try:
        out = scratch / "repo"
        out.mkdir(parents=True)
        _download(bare, scratch, packages, out, mirror)
        count = write_index(out)
        status = (bare / "var/lib/dpkg/status").read_text()
        if missing := missing_packages(packages, (out / INDEX).read_text(), status):
            raise LabError(f"the lab's package repository lacks {', '.join(missing)} (asked for by a service); "
                           "check the packages' names in deploykit/services/*/state.py")
        os.rename(out, final)
    finally:
        _remove_scratch(scratch)
    report(f"package repository built in {time.monotonic() - started:.0f} s: {count} packages in {final}")
    return final


def _download(bare: Path, scratch: Path, packages: tuple[str, ...], out: Path, mirror: str) -> None:
    """Every .deb a bare server needs for `packages`, resolved against the bare base itself (a scratch
    overlay, so the cached base is never written)."""
    upper, work, root = scratch / "upper", scratch / "work", scratch / "root"
    for d in (upper, work, root):
        d.mkdir()
    run(["mount", "-t", "overlay", "dklab-repo", "-o", f"lowerdir={bare},upperdir={upper},workdir={work}",
         str(root)])
    try:
        (root / "etc/apt/sources.list.d/deploykit-lab.list").unlink(missing_ok=True)
        image.use_host_mirror(root, mirror)
        run(["mount", "-t", "proc", "proc", str(root / "proc")])
        try:
            apt = ["chroot", str(root), *image.APT_ENV, "apt-get", "-q", "-y"]
            run([*apt, "update"])
            run([*apt, "install", "--download-only", "--no-install-recommends", *packages])
        finally:
            run(["umount", "-l", str(root / "proc")], check=False)
        debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise LabError("apt downloaded no package for the lab's repository")
        for deb in debs:
            shutil.copy2(deb, out / deb.name)
    finally:
        run(["umount", "-l", str(root)], check=False)


def _remove_scratch(path: Path) -> None:
    run(["umount", "-l", str(path / "root" / "proc")], check=False)
    run(["umount", "-l", str(path / "root")], check=False)
    shutil.rmtree(path, ignore_errors=True)


def cached_repos(cache: Path = image.CACHE_DIR) -> list[Path]:
    return sorted(cache.glob("repo-*")) + sorted(cache.glob(".repo-*")) if cache.is_dir() else []


def purge(cache: Path = image.CACHE_DIR) -> list[Path]:
    """Remove every cached repository (lab down --purge)."""
    removed = cached_repos(cache)
    for path in removed:
        _remove_scratch(path)  # a scratch build may still have mounts; a finished repository is plain files
    return removed
