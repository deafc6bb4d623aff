"""The test services' port picker never hands out one port twice (CI gave PostgreSQL and Redis the same one)."""

from __future__ import annotations

from chirp_services import free_port


def test_free_port_never_repeats_within_a_process() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
