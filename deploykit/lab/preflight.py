"""What the lab needs from this machine: Linux, root, a few Debian packages (installed when missing)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from deploykit.errors import LabError
from deploykit.lab.proc import run, tool_env

# tool -> the Debian package that ships it
TOOLS: dict[str, str] = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def missing_packages() -> list[str]:
    path = tool_env()["PATH"]
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool, path=path) is None})


def apt_install_argv(packages: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]


def check_machine(*, install: bool = True) -> None:
    """Raise LabError naming what is missing; install missing packages with apt-get when possible."""
    if not sys.platform.startswith("linux"):
        raise LabError(f"the lab runs only on Linux (this machine is {sys.platform})")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it makes bridges, mounts and containers): run it as root or with sudo")
    packages = missing_packages()
    if packages and install and shutil.which("apt-get", path=tool_env()["PATH"]):
        os.environ.setdefault("DEBIAN_FRONTEND", "noninteractive")
        if run(apt_install_argv(packages), check=False).returncode != 0:
            run(["apt-get", "update", "-q"])
            run(apt_install_argv(packages))
        packages = missing_packages()
    if packages:
        raise LabError(f"the lab needs these packages installed: {' '.join(packages)}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        run(["modprobe", "overlay"], check=False)
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise LabError("the lab needs overlayfs (kernel module `overlay`)")
    if not Path("/sys/fs/cgroup").is_dir():
        raise LabError("the lab needs cgroups mounted at /sys/fs/cgroup")
