"""A bare lab for inventories/lab.yml: servers as a provider delivers them, every package installed by the apply.

Its own pytest session (bin/test runs it after tests/e2e): a lab does not change kind while it exists, and the
preinstalled lab of tests/e2e uses the same inventory. Needs root on Linux, like tests/e2e.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploykit.lab.lab import Lab
from tests.e2e.conftest import lab_session
from tests.measure import measure, pytest_terminal_summary  # noqa: F401


@pytest.fixture(scope="session")
def bare_lab() -> Iterator[Lab]:
    yield from lab_session(bare=True)
