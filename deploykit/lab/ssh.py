"""SSH from the controller to a lab server: strict host-key checking against the lab's known_hosts."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path


def ssh_argv(
    address: str, *, port: int, identity_file: Path, known_hosts: Path, command: Sequence[str] = (),
    batch: bool = True, connect_timeout: int = 5,
) -> list[str]:  # fmt: skip
    argv = [
        "ssh", "-i", str(identity_file), "-p", str(port),
        "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR",
    ]  # fmt: skip
    if batch:
        argv += ["-o", "BatchMode=yes"]
    return [*argv, f"root@{address}", *command]


def port_open(address: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH")
    except OSError:
        return False
