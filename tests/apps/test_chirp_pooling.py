"""chirp behind PgBouncer in transaction pooling mode: what goes to the session pool, what a transaction pool
never gets (the `options` startup parameter, session state). The PgBouncer tests run a real PgBouncer 1.18
in front of the test PostgreSQL and skip when it is not installed."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from chirp_services import Services

DIRECT = {"CHIRP_DB_HOST": "10.0.0.5", "CHIRP_DB_PORT": "5432", "CHIRP_DB_NAME": "chirp", "CHIRP_DB_PASSWORD": "pw"}
POOLED = {**DIRECT, "CHIRP_DB_PORT": "6432", "CHIRP_DB_POOLED": "1", "CHIRP_DB_SESSION_NAME": "chirp_session"}
# What psycopg2.connect got before pooling existed: unchanged without the new variables.
DIRECT_KWARGS = {
    "host": "10.0.0.5",
    "port": 5432,
    "dbname": "chirp",
    "user": "chirp",
    "password": "pw",
    "connect_timeout": 2,
    "target_session_attrs": "read-write",
    "application_name": "chirp",
    "options": "-c statement_timeout=5000",
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
}


# --- settings and connection arguments ---------------------------------------------------------------------


def test_settings_session_name_defaults_to_the_database_and_pooling_is_off() -> None:
    from chirp.config import Settings

    s = Settings.from_env({"CHIRP_DB_NAME": "app"})
    assert (s.db_name, s.db_session, s.db_pooled, s.health_grace_s) == ("app", "app", False, 15.0)
    assert Settings.from_env({"CHIRP_DB_NAME": "app", "CHIRP_DB_POOLED": "0"}).db_pooled is False
    s = Settings.from_env({**POOLED, "CHIRP_HEALTH_GRACE_S": "5"})
    assert (s.db_name, s.db_session, s.db_pooled, s.health_grace_s) == ("chirp", "chirp_session", True, 5.0)
    with pytest.raises(ValueError, match="CHIRP_DB_POOLED must be 1 or 0, not 'yes'"):
        Settings.from_env({"CHIRP_DB_POOLED": "yes"})


def test_direct_connections_are_as_before_and_session_ones_go_to_the_same_database() -> None:
    from chirp.config import Settings
    from chirp.db import Database

    direct = Settings.from_env(DIRECT)
    assert Database(direct).connect_kwargs("pw") == DIRECT_KWARGS
    assert Database(direct).connect_kwargs("pw", session=True) == DIRECT_KWARGS
    assert Database(direct, 30000).connect_kwargs("pw")["options"] == "-c statement_timeout=30000"
    no_limit = {k: v for k, v in DIRECT_KWARGS.items() if k != "options"}  # migrate: libpq sent options="" before
    assert Database(direct, None).connect_kwargs("pw", session=True) == no_limit


def test_pooled_connections_never_send_options_and_sessions_go_to_the_session_pool() -> None:
    from chirp.config import Settings
    from chirp.db import Database

    pooled = Settings.from_env(POOLED)
    for timeout in (5000, 30000, None):
        db = Database(pooled, timeout)
        plain, session = db.connect_kwargs("pw"), db.connect_kwargs("pw", session=True)
        assert "options" not in plain and "options" not in session, timeout
        assert (plain["dbname"], session["dbname"]) == ("chirp", "chirp_session")
        assert {k: v for k, v in plain.items() if k != "dbname"} == {
            k: v for k, v in DIRECT_KWARGS.items() if k not in ("dbname", "options", "port")
        } | {"port": 6432}


# --- against PostgreSQL directly: the session database, and statement timeouts when pooled --------------------


def show_timeout(cur: Any) -> str:
    cur.execute("SHOW statement_timeout")
    return str(cur.fetchone()[0])


def test_migrate_takes_its_lock_on_the_session_database(services: Services, settings: Any) -> None:
    from chirp.db import Database
    from chirp.migrate import LATEST, migrate

    services.psql("DROP DATABASE IF EXISTS chirp_sessiondb")
    services.psql("CREATE DATABASE chirp_sessiondb OWNER chirp")
    # db_name names no database: only the session database can have been used
    split = dataclasses.replace(settings, db_name="chirp_no_such_db", db_session_name="chirp_sessiondb")
    assert migrate(Database(split, statement_timeout_ms=None)) == ([1], LATEST)
    assert services.query("SELECT max(version) FROM chirp_schema", db="chirp_sessiondb") == [(LATEST,)]


def test_worker_listens_on_the_session_database(services: Services, clean: Any) -> None:
    from chirp.worker import Worker

    services.psql("DROP DATABASE IF EXISTS chirp_listendb")
    services.psql("CREATE DATABASE chirp_listendb OWNER chirp")
    worker = Worker(dataclasses.replace(clean, db_session_name="chirp_listendb"), poll_s=0.05)
    try:
        worker._wait_for_posts()  # makes the LISTEN connection
        pid = worker._listen.info.backend_pid
        listening = services.query("SELECT datname, query FROM pg_stat_activity WHERE pid = %s", (pid,))
        assert listening == [("chirp_listendb", "LISTEN chirp_posts")]
    finally:
        worker.stop()
        worker.run()  # returns at once: closes its connections


def test_pooled_statement_timeouts_end_with_the_transaction(settings: Any) -> None:
    """Through a transaction pool a Database sets a limit other than the pool's with SET LOCAL, never SET;
    a session connection (migrate, LISTEN) gets a plain SET."""
    from chirp.db import Database

    pooled = dataclasses.replace(settings, db_pooled=True)
    web, worker = Database(pooled), Database(pooled, statement_timeout_ms=30000)
    try:
        assert Database(settings).read(show_timeout) == "5s"  # direct: the `options` startup parameter
        assert web.read(show_timeout) == "0"  # the pool's connect_query sets it (see the PgBouncer tests)
        assert worker.read(show_timeout) == "30s"
        assert worker.write(show_timeout) == "30s"
        with worker._conn().cursor() as cur:  # the same connection, outside those transactions
            assert show_timeout(cur) == "0"
        worker._conn().rollback()
    finally:
        web.close()
        worker.close()
    for timeout, expected in ((None, "0"), (30000, "30s")):
        conn = Database(pooled, statement_timeout_ms=timeout).connect(session=True)
        try:
            with conn.cursor() as cur:
                assert show_timeout(cur) == expected
        finally:
            conn.close()


# --- through a real PgBouncer 1.18 -------------------------------------------------------------------------------


def through_pgbouncer(services: Services, settings: Any) -> Any:
    port = services.pgbouncer_port
    return dataclasses.replace(settings, db_port=port, db_pooled=True, db_session_name="chirp_session")


def test_pgbouncer_refuses_options_and_chirp_does_not_send_them(pgbouncer: Services, clean: Any) -> None:
    import psycopg2
    from chirp.db import Database

    direct_style = dataclasses.replace(clean, db_port=pgbouncer.pgbouncer_port)
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter: options"):
        Database(direct_style).connect()
    pooled = through_pgbouncer(pgbouncer, clean)
    web, worker = Database(pooled), Database(pooled, statement_timeout_ms=30000)
    try:
        assert web.read(show_timeout) == "5s"  # the pool's connect_query
        assert worker.read(show_timeout) == "30s"
        assert web.read(show_timeout) == "5s"  # the same server connection (pool of one): SET LOCAL ended
    finally:
        web.close()
        worker.close()


def test_app_worker_and_migrate_through_pgbouncer(pgbouncer: Services, clean: Any) -> None:
    from chirp.db import Database
    from chirp.migrate import LATEST, migrate
    from chirp.web import create_app
    from chirp.worker import Worker

    pooled = through_pgbouncer(pgbouncer, clean)
    assert migrate(Database(pooled, statement_timeout_ms=None)) == ([], LATEST)
    app = create_app(pooled)
    client = app.test_client()
    worker = Worker(pooled, poll_s=5.0)  # a long poll: only NOTIFY (to LISTEN on the session pool) is fast
    thread = threading.Thread(target=worker.run, daemon=True)
    try:
        for name in ("alice", "bob"):
            assert client.post("/api/users", json={"name": name}).status_code == 201
        assert client.post("/api/follow", json={"follower": "bob", "followee": "alice"}).status_code == 201
        thread.start()
        time.sleep(0.5)
        resp = client.post("/api/posts", json={"author": "alice", "text": "pooled"})
        assert resp.status_code == 201
        pid = resp.get_json()["id"]
        deadline = time.monotonic() + 3
        while pgbouncer.query("SELECT fanned_out FROM posts WHERE id = %s", (pid,)) != [(True,)]:
            assert time.monotonic() < deadline, "the worker did not fan the post out within 3 s"
            time.sleep(0.05)
        body = client.get("/api/timeline/bob").get_json()
        assert (body["source"], [p["text"] for p in body["posts"]]) == ("db", ["pooled"])
        assert client.get("/api/timeline/bob").get_json()["source"] == "cache"
        health = client.get("/healthz")
        assert health.status_code == 200 and health.get_json()["status"] == "ok"
    finally:
        worker.stop()
        if thread.is_alive():
            thread.join(10)
        app.extensions["chirp"]["db"].close()
        app.extensions["chirp"]["cache"].close()



def test_while_the_password_is_rotated_pgbouncer_s_refusal_makes_chirp_try_the_previous_one(
        pgbouncer: Services, clean: Any) -> None:
    """A rotation's first apply gives the app the new password while PgBouncer's auth_file (like PostgreSQL)
    still holds the previous one. PgBouncer refuses a SCRAM login with its own words ("SASL authentication
    failed"), not PostgreSQL's: chirp must take that as a wrong password too, or the release command fails."""
    import psycopg2
    from chirp.db import Database

    pooled = through_pgbouncer(pgbouncer, clean)
    wrong = dataclasses.replace(pooled, db_password="not-yet-in-the-pool", db_password_previous=None)
    with pytest.raises(psycopg2.OperationalError) as refused:
        Database(wrong).connect()
    rotating = dataclasses.replace(wrong, db_password_previous=pooled.db_password)
    for session in (False, True):  # the app's pool and the migration's session
        conn = Database(rotating).connect(session=session)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_user")
                assert cur.fetchone() == (pooled.db_user,), str(refused.value)
        finally:
            conn.close()
