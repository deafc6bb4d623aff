"""A bare lab for inventories/lab.yml: servers as a provider delivers them, every package installed by the apply.

Its own pytest session (bin/test runs it after tests/e2e): a lab does not change kind while it exists, and the
preinstalled lab of tests/e2e uses the same inventory. Needs root on Linux, like tests/e2e.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab
from deploykit.lab.state import load_state
from tests.e2e.conftest import LAB_INVENTORY, lab_unavailable, measure, pytest_terminal_summary  # noqa: F401


@pytest.fixture(scope="session")
def bare_lab() -> Iterator[Lab]:
    if (reason := lab_unavailable()) is not None:
        pytest.skip(reason)
    the_lab = Lab.for_inventory(load_inventory(LAB_INVENTORY), bare=True)
    try:
        the_lab.up()
        yield the_lab
    finally:
        if load_state(the_lab.name) is not None:  # not when `up` refused at once (e.g. another lab's networks)
            the_lab.down()
    left = the_lab.remains()
    assert not left, f"lab down left behind: {left}"
