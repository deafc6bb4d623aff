"""/healthz: "cannot serve" (503 at once) against "database slow" (200 degraded within the grace, 503 after).

The logic first, with a fake database and clock; then against the real PostgreSQL (a lock the check's query
needs makes it slow; a silent host makes connecting hang) and a real PgBouncer whose only server connection
is busy (skipped when PgBouncer is not installed).
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chirp_services import Services

psycopg2 = pytest.importorskip("psycopg2")
errors = pytest.importorskip("psycopg2.errors")
PoolWaitTimeout = pytest.importorskip("chirp.db").PoolWaitTimeout
STATEMENT_TIMEOUT = errors.QueryCanceled("canceling statement due to statement timeout")
QUERY_WAIT_TIMEOUT = PoolWaitTimeout("FATAL:  query_wait_timeout\nserver closed the connection unexpectedly")
REFUSED = psycopg2.OperationalError('connection to server at "10.0.0.5", port 5432 failed: Connection refused')
AUTH_FAILED = psycopg2.OperationalError('FATAL:  password authentication failed for user "chirp"')
READ_ONLY = errors.ReadOnlySqlTransaction("the database is read-only (a replica or a demoted primary)")


class FakeDb:
    """Database.check's stand-in: `answer` returns the schema version or raises."""

    def __init__(self) -> None:
        self.answer: Callable[[], int] = lambda: 1
        self.calls: list[int] = []

    def check(self, fn: Any, timeout_ms: int) -> int:
        self.calls.append(timeout_ms)
        return self.answer()


class FakeCache:
    def __init__(self) -> None:
        self.error: Exception | None = None

    def ping(self) -> str:
        if self.error is not None:
            raise self.error
        return "10.0.0.9:6379"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def raises(exc: BaseException) -> Callable[[], int]:
    def answer() -> int:
        raise exc

    return answer


def health(db: FakeDb, clock: Callable[[], float] = time.monotonic, ttl_s: float = 0.0, budget_s: float = 1.0) -> Any:
    from chirp.health import Health

    return Health(db, FakeCache(), "r1", ttl_s=ttl_s, grace_s=15.0, budget_s=budget_s, clock=clock)  # type: ignore[arg-type]


def db_part(h: Any) -> tuple[int, str, dict[str, Any]]:
    body, status = h.get()
    return status, body["status"], {k: v for k, v in body["db"].items() if k != "ms"}


# --- the logic, with a fake database -------------------------------------------------------------------------


def test_slow_is_degraded_within_the_grace_and_a_failure_after() -> None:
    db, clock = FakeDb(), Clock()
    h = health(db, clock)
    assert db_part(h) == (200, "ok", {"ok": True, "schema": 1})
    assert db.calls == [800]  # the check's statement timeout: within the 1 s budget
    for slow in (STATEMENT_TIMEOUT, QUERY_WAIT_TIMEOUT):
        db.answer = raises(slow)
        clock.now += 5
        status, state, part = db_part(h)
        assert (status, state, part["ok"], part["slow"]) == (200, "degraded", True, True), slow
        assert part["error"] == str(slow).strip()
    assert db_part(h)[2]["last_ok_s"] == 10.0
    clock.now += 5  # 15 s since the last answer: still within the grace
    assert db_part(h)[:2] == (200, "degraded")
    clock.now += 0.1
    assert db_part(h) == (503, "fail", {"ok": False, "slow": True, "error": str(QUERY_WAIT_TIMEOUT).strip(),
                                        "last_ok_s": 15.1})
    db.answer = lambda: 1
    assert db_part(h)[:2] == (200, "ok")


def test_cannot_serve_is_a_failure_at_once_and_ends_the_grace() -> None:
    db, clock = FakeDb(), Clock()
    h = health(db, clock)
    for down in (REFUSED, AUTH_FAILED, READ_ONLY, RuntimeError("anything else")):
        db.answer = lambda: 1
        assert db_part(h)[:2] == (200, "ok")
        clock.now += 1
        db.answer = raises(down)
        assert db_part(h) == (503, "fail", {"ok": False, "error": str(down)}), down
        db.answer = raises(STATEMENT_TIMEOUT)  # slow right after being down: no grace
        assert db_part(h) == (503, "fail", {"ok": False, "slow": True, "error": str(STATEMENT_TIMEOUT),
                                            "last_ok_s": None})


def test_a_first_check_that_is_slow_fails() -> None:
    db = FakeDb()
    db.answer = raises(STATEMENT_TIMEOUT)
    assert db_part(health(db, Clock()))[:2] == (503, "fail")


def test_an_answer_later_than_the_budget_is_slow_and_does_not_renew_the_grace() -> None:
    db, clock = FakeDb(), Clock()
    h = health(db, clock)
    db_part(h)

    def late() -> int:
        time.sleep(0.1)  # (in real time: the answer is computed meanwhile, waiting for the check)
        clock.now += 2.0  # the check took 2 s (waiting for a pool slot, say), then answered
        return 1

    db.answer = late
    status, state, part = db_part(h)
    assert (status, state, part["slow"]) == (200, "degraded", True)
    assert part["error"] == "answered after 2000 ms (budget 1000 ms)"
    for _ in range(7):  # 14 s more of late answers
        db_part(h)
    assert db_part(h)[:2] == (503, "fail")  # 18 s since the last answer within the budget


def test_redis_failing_fails_the_check_whatever_the_database() -> None:
    db, clock = FakeDb(), Clock()
    h = health(db, clock)
    h.cache.error = ConnectionError("no master")
    body, status = h.get()
    assert (status, body["status"], body["db"]["ok"], body["cache"]["ok"]) == (503, "fail", True, False)
    assert body["cache"]["error"] == "ConnectionError: no master"
    h.cache.error = None
    db.answer = raises(STATEMENT_TIMEOUT)
    assert h.get()[1] == 200
    h.cache.error = ConnectionError("no master")
    assert h.get()[0]["status"] == "fail" and h.get()[1] == 503


def test_the_answer_is_kept_ttl_seconds() -> None:
    db, clock = FakeDb(), Clock()
    h = health(db, clock, ttl_s=1.0)
    h.get()
    clock.now += 0.9
    h.get()
    assert len(db.calls) == 1
    clock.now += 0.1
    h.get()
    assert len(db.calls) == 2


def test_a_hanging_database_gets_an_answer_within_the_budget_and_one_check_in_flight() -> None:
    db = FakeDb()
    h = health(db, budget_s=0.3)
    assert h.get()[1] == 200
    release = threading.Event()
    db.answer = lambda: int(release.wait(30))  # connecting, or waiting for PgBouncer's pool slot: no timeout

    def timed_get(_: int) -> tuple[float, dict[str, Any], int]:
        start = time.monotonic()
        body, status = h.get()
        return time.monotonic() - start, body, status

    try:
        with ThreadPoolExecutor(8) as pool:  # gunicorn's threads, all asking at once
            results = sorted(pool.map(timed_get, range(8)), key=lambda r: r[0])
        took, body, status = results[-1]  # the one that computed the answer waited for the budget, no longer
        assert 0.25 < took < 0.8
        assert (status, body["status"], body["db"]["slow"]) == (200, "degraded", True)
        assert body["db"]["error"] == "no answer within 300 ms (check still running)"
        assert all(t < 0.1 and code == 200 for t, _, code in results[:-1]), results  # the last answer, at once
        took, body, status = timed_get(0)  # later: the same check still in flight, reported at once
        assert took < 0.1 and body["db"]["ms"] >= 300 and status == 200
        assert len(db.calls) == 2  # none started behind the hanging one
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while h.get()[0]["status"] != "ok":  # the late answer is "slow"; the next check answers at once
        assert time.monotonic() < deadline
    assert len(db.calls) == 3


# --- the real thing ----------------------------------------------------------------------------------------------


@pytest.fixture
def graced_app(clean: Any) -> Iterator[Any]:
    """The app with a 2 s grace, to see it end in a test."""
    from chirp.web import create_app

    application = create_app(dataclasses.replace(clean, health_grace_s=2.0))
    yield application
    application.extensions["chirp"]["db"].close()
    application.extensions["chirp"]["cache"].close()


def timed_healthz(client: Any) -> tuple[float, int, dict[str, Any]]:
    start = time.monotonic()
    resp = client.get("/healthz")
    return time.monotonic() - start, resp.status_code, resp.get_json()


def test_locked_schema_table_is_slow_degraded_then_failing(graced_app: Any, services: Services) -> None:
    client = graced_app.test_client()
    assert client.get("/healthz").status_code == 200
    blocker = psycopg2.connect(host="127.0.0.1", port=services.pg_port, user="postgres", dbname="chirp")
    try:
        with blocker.cursor() as cur:  # the check's SELECT on chirp_schema now waits for this transaction
            cur.execute("LOCK TABLE chirp_schema IN ACCESS EXCLUSIVE MODE")
        took, status, body = timed_healthz(client)
        assert took < 1.8  # the 1 s statement timeout, within HAProxy's 2 s check timeout
        assert (status, body["status"], body["db"]["ok"], body["db"]["slow"]) == (200, "degraded", True, True)
        assert "statement timeout" in body["db"]["error"]
        time.sleep(1.2)  # past the 2 s grace
        took, status, body = timed_healthz(client)
        assert took < 1.8
        assert (status, body["status"], body["db"]["ok"], body["db"]["slow"]) == (503, "fail", False, True)
    finally:
        blocker.close()
    took, status, body = timed_healthz(client)
    assert (status, body["status"], body["db"]) == (200, "ok", {"ok": True, "schema": 1, "ms": body["db"]["ms"]})


def test_a_database_host_gone_silent_is_degraded_then_down_when_connecting_fails(
    app: Any, services: Services
) -> None:
    """After a failover the kept connection dies and the address no longer answers (packets dropped):
    the first answers come within the budget ("slow", within the grace), and once libpq gives up connecting
    (a failure, not slowness) the host fails its check, long before the 15 s grace is over."""
    from chirp.db import CONNECT_TIMEOUT_S

    client = app.test_client()
    db = app.extensions["chirp"]["db"]
    assert client.get("/healthz").status_code == 200
    with socket.socket() as silent:  # accepts TCP, never speaks: to libpq, a dead host across the mesh
        silent.bind(("127.0.0.2", services.pg_port))
        silent.listen(8)
        db.settings = dataclasses.replace(db.settings, db_host="127.0.0.2")
        services.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chirp'")
        took, status, body = timed_healthz(client)
        assert took < 1.5 and (status, body["status"]) == (200, "degraded")
        assert body["db"]["error"] == "no answer within 1000 ms (check still running)"
        time.sleep(CONNECT_TIMEOUT_S - took + 0.2)  # libpq gave up on the connection
        took, status, body = timed_healthz(client)
        assert took < 1.5 and (status, body["status"]) == (503, "fail")
        assert body["db"]["last_ok_s"] is None  # down since: no grace


def test_a_read_only_database_fails_at_once(client: Any, services: Services) -> None:
    assert client.get("/healthz").status_code == 200
    services.psql("ALTER ROLE chirp SET default_transaction_read_only = on")
    try:
        services.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chirp'")
        resp = client.get("/healthz")
        db = resp.get_json()["db"]
        assert resp.status_code == 503 and not db["ok"] and "slow" not in db
        assert db["error"].endswith("session is read-only")  # libpq's target_session_attrs=read-write
    finally:
        services.psql("ALTER ROLE chirp RESET default_transaction_read_only")


def test_the_kept_check_connection_is_replaced_after_it_was_killed(client: Any, services: Services) -> None:
    assert client.get("/healthz").status_code == 200
    killed = services.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chirp'"
    )  # as after a failover
    assert killed and all(ok for (ok,) in killed)
    resp = client.get("/healthz")
    assert resp.status_code == 200, resp.get_json()


def test_pgbouncer_pool_saturated_is_degraded_not_down(pgbouncer: Services, clean: Any) -> None:
    from chirp.web import create_app

    pooled = dataclasses.replace(clean, db_port=pgbouncer.pgbouncer_port, db_pooled=True,
                                 db_session_name="chirp_session", health_grace_s=2.0)
    app = create_app(pooled)
    client = app.test_client()
    hog = psycopg2.connect(host="127.0.0.1", port=pgbouncer.pgbouncer_port, user="chirp",
                           password=pgbouncer.env["CHIRP_DB_PASSWORD"], dbname="chirp")
    try:
        assert client.get("/healthz").status_code == 200
        with hog.cursor() as cur:  # a transaction holds the pool's only server connection
            cur.execute("SELECT 1")
        took, status, body = timed_healthz(client)
        assert took < 1.5
        assert (status, body["status"], body["db"]["slow"]) == (200, "degraded", True)
        time.sleep(1.5)
        took, status, body = timed_healthz(client)
        assert took < 1.5 and (status, body["status"]) == (503, "fail")
        hog.rollback()
        deadline = time.monotonic() + 3
        while client.get("/healthz").status_code != 200:  # the waiting check goes through, the next one is ok
            assert time.monotonic() < deadline
            time.sleep(0.1)

        # PgBouncer giving up on the wait (query_wait_timeout) is "slow" too, not "down"
        pgbouncer.stop_pgbouncer()
        pgbouncer.start_pgbouncer(query_wait_timeout_s=0.3)
        hog.close()
        hog = psycopg2.connect(host="127.0.0.1", port=pgbouncer.pgbouncer_port, user="chirp",
                               password=pgbouncer.env["CHIRP_DB_PASSWORD"], dbname="chirp")
        resp = client.get("/healthz")
        assert resp.status_code == 200, resp.get_json()  # after a failed kept connection: a fresh one
        with hog.cursor() as cur:
            cur.execute("SELECT 1")
        took, status, body = timed_healthz(client)
        assert (status, body["status"], body["db"].get("slow")) == (200, "degraded", True), body
        assert "query_wait_timeout" in body["db"]["error"]
    finally:
        hog.close()
        app.extensions["chirp"]["db"].close()
        app.extensions["chirp"]["cache"].close()
