"""A real PostgreSQL 15, Redis and one Sentinel on 127.0.0.1 for chirp's tests, started in a temp dir and
stopped (and removed) at the end of the session. Skips with the reason when a binary or library is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chirp_services import MASTER, PASSWORD, PG_BIN, PGBOUNCER, Services, free_port, missing_requirements

from tests.measure import measure, pytest_terminal_summary  # noqa: F401


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="chirp-test-"))
    root.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "nobody", "--"]
    svc = Services(root, free_port(), free_port(), free_port(), as_user)
    try:
        for d in ("pg", "sock"):
            (root / d).mkdir()
            if as_user:
                shutil.chown(root / d, "nobody")
        if as_user:
            (root / "pg.log").touch()
            shutil.chown(root / "pg.log", "nobody")
        subprocess.run(
            [
                *as_user,
                str(PG_BIN / "initdb"),
                "-D",
                str(root / "pg"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        # The app role logs in with its password (as on the servers); the tests' superuser is trusted.
        (root / "pg" / "pg_hba.conf").write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                                                 "host all all 127.0.0.1/32 scram-sha-256\n")
        svc.start_pg()
        svc.psql(f"CREATE ROLE chirp LOGIN PASSWORD '{PASSWORD}'")
        svc.psql("CREATE DATABASE chirp OWNER chirp")
        svc.start_redis()
        svc.start_sentinel()
        svc.env = {
            "CHIRP_DB_HOST": "127.0.0.1",
            "CHIRP_DB_PORT": str(svc.pg_port),
            "CHIRP_DB_NAME": "chirp",
            "CHIRP_DB_USER": "chirp",
            "CHIRP_DB_PASSWORD": PASSWORD,
            "CHIRP_SENTINELS": f"127.0.0.1:{svc.sentinel_port}",
            "CHIRP_REDIS_MASTER": MASTER,
            "CHIRP_REDIS_PASSWORD": PASSWORD,
            "CHIRP_RELEASE": "rel-test-1",
            "CHIRP_SECRET_KEY": "k",
            "CHIRP_HEALTH_TTL_S": "0",
        }
        yield svc
    finally:
        svc.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(services: Services) -> Any:
    from chirp.config import Settings

    return Settings.from_env(services.env)


@pytest.fixture(scope="session")
def migrated(services: Services, settings: Any) -> Any:
    from chirp.db import Database
    from chirp.migrate import LATEST, migrate

    applied, version = migrate(Database(settings, statement_timeout_ms=None))
    assert (applied, version) == ([1], LATEST)
    return settings


@pytest.fixture
def clean(services: Services, migrated: Any) -> Any:
    """The migrated settings, with empty tables and an empty Redis."""
    if services.redis is None:
        services.start_redis()
    services.query("TRUNCATE users, follows, posts RESTART IDENTITY CASCADE")
    services.redis_client().flushall()
    return migrated


@pytest.fixture
def app(clean: Any) -> Iterator[Any]:
    from chirp.web import create_app

    application = create_app(clean)
    yield application
    application.extensions["chirp"]["db"].close()
    application.extensions["chirp"]["cache"].close()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def pgbouncer(services: Services, migrated: Any) -> Iterator[Services]:
    """PgBouncer 1.18 in front of the test PostgreSQL (`chirp`: transaction pool of one server connection,
    `chirp_session`: session pool), stopped after the test. Skips when it is not installed."""
    if not Path(PGBOUNCER).exists():
        pytest.skip("pgbouncer not installed (apt-get install pgbouncer)")
    services.start_pgbouncer()
    try:
        yield services
    finally:
        services.stop_pgbouncer()
