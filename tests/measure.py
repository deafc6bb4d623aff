"""Figures a test run measures (times, counts) and prints at its end: one `measure` fixture for every suite.

A conftest takes it with `from tests.measure import measure, pytest_terminal_summary  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

MEASUREMENTS: list[tuple[str, str]] = []


@pytest.fixture(scope="session")
def measure() -> Callable[[str, str], None]:
    """Record a figure (time, count) that the run prints at the end: what the tests measured."""

    def record(name: str, value: str) -> None:
        MEASUREMENTS.append((name, value))

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASUREMENTS:
        terminalreporter.section("measured")
        for name, value in MEASUREMENTS:
            terminalreporter.write_line(f"{name}: {value}")
