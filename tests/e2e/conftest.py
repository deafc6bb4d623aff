"""The lab for end-to-end tests: real servers for inventories/lab.yml, up once per session, always removed.

Needs root on Linux (CI runs `sudo ./bin/test`); elsewhere every e2e test is skipped with the reason.
The first run on a machine builds the lab's base image (about a minute or a few; cached afterwards).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.state import load_state
from tests.measure import measure, pytest_terminal_summary  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
LAB_INVENTORY = REPO / "inventories" / "lab.yml"


def lab_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the lab needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the lab needs root: run the e2e tests as root (sudo ./bin/test)"
    return None


def lab_session(bare: bool = False) -> Iterator[Lab]:
    """`deploykit lab up inventories/lab.yml` (`--bare`); `lab down` at the end of the session, also after
    failures, and a check that nothing was left behind. Skipped where the lab cannot run."""
    if (reason := lab_unavailable()) is not None:
        pytest.skip(reason)
    the_lab = Lab.for_inventory(load_inventory(LAB_INVENTORY), bare=bare)
    try:
        the_lab.up()
        yield the_lab
    finally:
        if load_state(the_lab.name) is not None:  # not when `up` refused at once (e.g. another lab's networks)
            the_lab.down()
    left = the_lab.remains()
    assert not left, f"lab down left behind: {left}"


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from lab_session()


def deploykit(*args: str, timeout: float = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `deploykit` command (no TTY, as in CI)."""
    return subprocess.run([sys.executable, "-m", "deploykit", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, cwd=REPO)


def grown_inventory(tmp: Path, *entries: str) -> Path:
    """lab.yml with more `hosts:` entries (YAML lines), written in `tmp` beside a copy of the deployment's
    state (secrets, facts, zone serial), its lab key and known_hosts named by absolute path. `lab up` of it
    adds the servers to the running lab; `lab up` of lab.yml afterwards removes them again."""
    text = LAB_INVENTORY.read_text()
    lab_dir = LAB_INVENTORY.parent / ".lab"
    text = text.replace(".lab/id_ed25519", str(lab_dir / "id_ed25519")).replace(
        ".lab/known_hosts", str(lab_dir / "known_hosts"))
    text = text.replace("  rbx1-web-[1:2]:", "".join(f"{e}\n" for e in entries) + "  rbx1-web-[1:2]:", 1)
    assert all(e in text for e in entries)
    name = load_inventory(LAB_INVENTORY).name
    for state in LAB_INVENTORY.parent.glob(f"{name}.*"):
        shutil.copy2(state, tmp / state.name)
    grown = tmp / "lab-grown.yml"
    grown.write_text(text)
    return grown
