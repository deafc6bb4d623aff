"""Running the machine's own tools (ip, nft, mount, ...) for the lab: failures become one clear LabError."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from deploykit.errors import LabError


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command; with check, a non-zero exit raises LabError naming the command and its stderr."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True, env=tool_env())
    except FileNotFoundError as e:
        raise LabError(f"{argv[0]}: command not found") from e
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit code {done.returncode}"
        raise LabError(f"`{' '.join(argv)}` failed: {last}")
    return done


def ok(argv: Sequence[str]) -> bool:
    """Whether a command succeeds (for probes such as `ip link show BRIDGE`)."""
    return run(argv, check=False).returncode == 0


def tool_env() -> dict[str, str]:
    """The environment with the system's sbin directories on PATH (ip, nft, debootstrap live there)."""
    env = dict(os.environ)
    path = env.get("PATH", "")
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin") if d not in path.split(":")]
    env["PATH"] = ":".join([p for p in [path, *extra] if p])
    return env
