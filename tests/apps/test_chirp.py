"""chirp against a real PostgreSQL 15, Redis and Sentinel on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from chirp_services import CHIRP_DIR, MASTER, Services, free_port, wait_port


def raw_redis(services: Services) -> Any:
    return services.redis_client()


def pg(services: Services, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return services.query(sql, args)


def fan_out(settings: Any) -> int:
    from chirp.cache import Cache
    from chirp.db import Database
    from chirp.worker import fan_out_pending

    db, cache = Database(settings), Cache(settings)
    try:
        return fan_out_pending(db, cache)
    finally:
        db.close()
        cache.close()


def users(client: Any, *names: str) -> None:
    for name in names:
        assert client.post("/api/users", json={"name": name}).status_code == 201


def post(client: Any, author: str, text: str) -> int:
    resp = client.post("/api/posts", json={"author": author, "text": text})
    assert resp.status_code == 201, resp.get_json()
    return int(resp.get_json()["id"])


def texts(client: Any, name: str) -> tuple[str, list[str]]:
    resp = client.get(f"/api/timeline/{name}")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    return body["source"], [p["text"] for p in body["posts"]]


# --- configuration ---------------------------------------------------------------------------------------


def test_env_file_parsing_matches_systemd_quoting() -> None:
    from chirp.config import Settings, parse_env_file

    env = parse_env_file('# c\nCHIRP_DB_PASSWORD="a\\"b\\\\c"\nCHIRP_SENTINELS=10.0.0.1:26379,10.0.0.2:26379\n\n')
    assert env["CHIRP_DB_PASSWORD"] == 'a"b\\c'
    assert Settings.from_env(env).sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))


# --- several database hosts (a site's load balancers on the mesh) -------------------------------------------


def connected_host(settings: Any, db_host: str) -> tuple[str, float]:
    """The host a fresh connection ended up on, with CHIRP_DB_HOST set to `db_host`, and how long it took."""
    from chirp.db import Database

    start = time.monotonic()
    conn = Database(dataclasses.replace(settings, db_host=db_host)).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        return conn.info.host, time.monotonic() - start
    finally:
        conn.close()


def test_several_hosts_share_one_port_and_a_refusing_host_is_skipped(settings: Any) -> None:
    # 127.0.0.3: nothing listens on the port there (PostgreSQL listens on 127.0.0.1 only).
    host, took = connected_host(settings, "127.0.0.3,127.0.0.1")
    assert host == "127.0.0.1" and took < 1.5


def test_a_silent_host_costs_at_most_the_connect_timeout(settings: Any, services: Services) -> None:
    from chirp.db import CONNECT_TIMEOUT_S

    # A dead load balancer across the mesh answers nothing (WireGuard drops the packets): a listener that
    # never speaks is the same to libpq.
    with ThreadPoolExecutor(1) as pool, socket.socket() as silent:  # the socket closes first
        silent.bind(("127.0.0.2", services.pg_port))
        silent.listen(8)
        attempt = pool.submit(connected_host, settings, "127.0.0.2,127.0.0.1")
        host, took = attempt.result(timeout=CONNECT_TIMEOUT_S + 10)  # without a timeout libpq would wait on
    assert host == "127.0.0.1"
    assert CONNECT_TIMEOUT_S - 0.5 <= took < CONNECT_TIMEOUT_S + 2


# --- migrations ----------------------------------------------------------------------------------------


def test_migrate_is_idempotent(migrated: Any) -> None:
    from chirp.db import Database
    from chirp.migrate import LATEST, migrate

    assert migrate(Database(migrated, statement_timeout_ms=None)) == ([], LATEST)


def test_concurrent_migrations_apply_once(services: Services, migrated: Any) -> None:
    from chirp.config import Settings
    from chirp.db import Database
    from chirp.migrate import LATEST, migrate

    services.psql("DROP DATABASE IF EXISTS chirp_fresh")
    services.psql("CREATE DATABASE chirp_fresh OWNER chirp")
    fresh = Settings.from_env({**services.env, "CHIRP_DB_NAME": "chirp_fresh"})
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(Database(fresh, statement_timeout_ms=None)), range(4)))
    assert sorted(applied for applied, _ in results) == [[], [], [], [1]]
    assert {version for _, version in results} == {LATEST}


def test_migrate_command_reads_the_env_file(services: Services, migrated: Any, tmp_path: Any) -> None:
    env_file = tmp_path / "chirp.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in services.env.items()))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(CHIRP_DIR), "CHIRP_ENV_FILE": str(env_file)}
    out = subprocess.run(
        [sys.executable, "-m", "chirp", "migrate"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "nothing to apply; schema at version 1" in out.stdout


# --- users, posts, follows ---------------------------------------------------------------------------------


def test_create_user(client: Any) -> None:
    resp = client.post("/api/users", json={"name": "alice"})
    assert resp.status_code == 201
    assert resp.get_json()["name"] == "alice"
    assert resp.headers["X-Chirp-Release"] == "rel-test-1"
    assert client.post("/api/users", json={"name": "alice"}).status_code == 409
    for bad in ({}, {"name": ""}, {"name": "a b"}, {"name": 7}, {"name": "x" * 65}, ["alice"]):
        assert client.post("/api/users", json=bad).status_code == 400, bad
    assert client.post("/api/users", data="not json", content_type="application/json").status_code == 400


def test_post_is_committed_before_201(client: Any, services: Services) -> None:
    users(client, "alice")
    resp = client.post("/api/posts", json={"author": "alice", "text": "hello"})
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["author"] == "alice" and body["text"] == "hello"
    assert pg(services, "SELECT text FROM posts WHERE id = %s", (body["id"],)) == [("hello",)]
    got = client.get(f"/api/posts/{body['id']}")
    assert got.status_code == 200 and got.get_json() == body
    assert client.get("/api/posts/999999").status_code == 404


def test_post_rejects_bad_input(client: Any) -> None:
    users(client, "alice")
    for bad in (
        {"author": "alice"},
        {"author": "alice", "text": ""},
        {"author": "alice", "text": "x" * 501},
        {"text": "hi"},
        {"author": "alice", "text": 5},
    ):
        assert client.post("/api/posts", json=bad).status_code == 400, bad
    assert client.post("/api/posts", json={"author": "nobody", "text": "hi"}).status_code == 404


def test_follow(client: Any) -> None:
    users(client, "alice", "bob")
    assert client.post("/api/follow", json={"follower": "alice", "followee": "bob"}).status_code == 201
    assert client.post("/api/follow", json={"follower": "alice", "followee": "bob"}).status_code == 200
    assert client.post("/api/follow", json={"follower": "alice", "followee": "alice"}).status_code == 400
    assert client.post("/api/follow", json={"follower": "alice"}).status_code == 400
    assert client.post("/api/follow", json={"follower": "alice", "followee": "zed"}).status_code == 404


# --- timelines and the fan-out worker -------------------------------------------------------------------------


def test_timeline_newest_first_before_and_after_fan_out(client: Any, clean: Any, services: Services) -> None:
    users(client, "alice", "bob", "carol")
    client.post("/api/follow", json={"follower": "alice", "followee": "bob"})
    post(client, "bob", "b1")
    post(client, "carol", "c1")  # alice does not follow carol
    post(client, "alice", "a1")
    post(client, "bob", "b2")
    # Not fanned out yet: the timeline (built from PostgreSQL) already has every committed post.
    assert texts(client, "alice") == ("db", ["b2", "a1", "b1"])
    assert fan_out(clean) == 4
    assert pg(services, "SELECT count(*) FROM posts WHERE NOT fanned_out") == [(0,)]
    r = raw_redis(services)
    assert sorted(int(i) for i in r.zrange("chirp:tl:1", 0, -1)) == [1, 3, 4]  # alice: b1, a1, b2
    assert texts(client, "alice") == ("cache", ["b2", "a1", "b1"])
    assert texts(client, "bob") == ("db", ["b2", "b1"])
    post(client, "bob", "b3")  # pending: merged from PostgreSQL into the cached timeline
    assert texts(client, "alice") == ("cache", ["b3", "b2", "a1", "b1"])
    assert client.get("/api/timeline/alice?limit=2").get_json()["posts"][0]["text"] == "b3"
    assert len(client.get("/api/timeline/alice?limit=2").get_json()["posts"]) == 2
    assert client.get("/api/timeline/nobody").status_code == 404
    assert client.get("/api/timeline/alice?limit=x").status_code == 400


def test_follow_invalidates_the_cached_timeline(client: Any, clean: Any) -> None:
    users(client, "alice", "carol")
    post(client, "carol", "old from carol")
    post(client, "alice", "mine")
    fan_out(clean)
    assert texts(client, "alice") == ("db", ["mine"])
    assert texts(client, "alice") == ("cache", ["mine"])
    client.post("/api/follow", json={"follower": "alice", "followee": "carol"})
    assert texts(client, "alice") == ("db", ["mine", "old from carol"])
    assert texts(client, "alice") == ("cache", ["mine", "old from carol"])


def test_fan_out_is_idempotent(client: Any, clean: Any, services: Services) -> None:
    users(client, "alice", "bob")
    client.post("/api/follow", json={"follower": "bob", "followee": "alice"})
    for i in range(3):
        post(client, "alice", f"p{i}")
    assert fan_out(clean) == 3
    pg(services, "UPDATE posts SET fanned_out = false")  # as if the worker died before its commit
    assert fan_out(clean) == 3
    assert fan_out(clean) == 0
    assert raw_redis(services).zcard("chirp:tl:2") == 3
    texts(client, "bob")
    assert texts(client, "bob") == ("cache", ["p2", "p1", "p0"])


def test_worker_process_fans_out_on_notify(client: Any, clean: Any, services: Services) -> None:
    from chirp.worker import Worker

    users(client, "alice", "bob")
    client.post("/api/follow", json={"follower": "bob", "followee": "alice"})
    worker = Worker(clean, poll_s=5.0)  # a long poll: only NOTIFY makes this fast
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        pid = post(client, "alice", "fast")
        deadline = time.monotonic() + 3
        while pg(services, "SELECT fanned_out FROM posts WHERE id = %s", (pid,)) != [(True,)]:
            assert time.monotonic() < deadline, "the worker did not fan the post out within 3 s"
            time.sleep(0.05)
        assert raw_redis(services).zscore("chirp:tl:2", str(pid)) == pid
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_wiped_cache_is_rebuilt_from_postgresql(client: Any, clean: Any, services: Services) -> None:
    users(client, "alice")
    post(client, "alice", "one")
    fan_out(clean)
    texts(client, "alice")
    assert texts(client, "alice") == ("cache", ["one"])
    raw_redis(services).flushall()  # a Redis restart without persistence
    post(client, "alice", "two")
    fan_out(clean)  # recreates the sorted set, but not the marker: the timeline is rebuilt on read
    assert texts(client, "alice") == ("db", ["two", "one"])
    assert texts(client, "alice") == ("cache", ["two", "one"])


# --- health and failures ---------------------------------------------------------------------------------------


def test_healthz_ok(client: Any) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "ok" and body["release"] == "rel-test-1"
    assert body["db"]["ok"] and body["db"]["schema"] == 1
    assert body["cache"]["ok"] and body["cache"]["master"].startswith("127.0.0.1:")


def test_redis_down_healthz_fails_fast_and_timelines_fall_back(client: Any, services: Services) -> None:
    users(client, "alice")
    post(client, "alice", "before")
    services.stop_redis()
    try:
        start = time.monotonic()
        resp = client.get("/healthz")
        assert time.monotonic() - start < 2.5
        assert resp.status_code == 503
        body = resp.get_json()
        assert body["status"] == "fail" and body["db"]["ok"] and not body["cache"]["ok"]
        assert post(client, "alice", "during") > 0  # writes need only PostgreSQL
        assert texts(client, "alice") == ("db", ["during", "before"])
    finally:
        services.start_redis()
    assert client.get("/healthz").status_code == 200  # sentinel hands out the same master again


def test_postgresql_down_healthz_fails_and_writes_get_503(client: Any, services: Services, clean: Any) -> None:
    users(client, "alice")
    post(client, "alice", "cached")
    fan_out(clean)
    texts(client, "alice")
    services.stop_pg()
    try:
        start = time.monotonic()
        resp = client.get("/healthz")
        assert time.monotonic() - start < 5
        assert resp.status_code == 503 and not resp.get_json()["db"]["ok"]
        assert client.post("/api/posts", json={"author": "alice", "text": "x"}).status_code == 503
        assert client.post("/api/users", json={"name": "bob"}).status_code == 503
        assert texts(client, "alice") == ("cache", ["cached"])  # served from Redis alone
    finally:
        services.start_pg()
    assert client.get("/healthz").status_code == 200
    assert post(client, "alice", "after") > 0


def test_killed_connections_are_replaced(client: Any, services: Services) -> None:
    users(client, "alice")
    pid = post(client, "alice", "hi")
    kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chirp'"
    pg(services, kill)  # as after a failover: every pooled connection is gone
    assert client.get(f"/api/posts/{pid}").status_code == 200  # read: one retry on a fresh connection
    pg(services, kill)
    assert post(client, "alice", "again") == pid + 1  # write failed before COMMIT: retried once
    assert pg(services, "SELECT count(*) FROM posts") == [(2,)]


def test_write_with_lost_commit_reply_is_verified_not_repeated(app: Any, services: Services) -> None:
    import psycopg2
    from chirp import store
    from chirp.db import Database

    client = app.test_client()
    users(client, "alice")
    db: Database = app.extensions["chirp"]["db"]
    real_commit_conn = db._conn()

    class LostReply:  # commits, then reports the connection lost, as when the primary dies mid-reply
        def __init__(self, conn: Any) -> None:
            self.conn = conn
            self.closed = 0

        def cursor(self) -> Any:
            return self.conn.cursor()

        def commit(self) -> None:
            self.conn.commit()
            raise psycopg2.OperationalError("server closed the connection unexpectedly")

        def close(self) -> None:
            self.conn.close()

    db._local.conn = LostReply(real_commit_conn)
    result = db.write(
        lambda cur: store.create_post(cur, "00000000-0000-4000-8000-000000000001", "alice", "t"),
        verify=lambda cur: store.post_by_uid(cur, "00000000-0000-4000-8000-000000000001"),
    )
    assert result["text"] == "t"
    assert pg(services, "SELECT count(*) FROM posts") == [(1,)]


# --- a real gunicorn, as on the servers ---------------------------------------------------------------------


def test_gunicorn_serves_chirp(clean: Any, services: Services) -> None:
    port = free_port()
    env = {**os.environ, **services.env, "PYTHONPATH": str(CHIRP_DIR), "CHIRP_RELEASE": "rel-gunicorn"}
    procfile = (CHIRP_DIR / "Procfile").read_text()
    web = next(line.split(":", 1)[1] for line in procfile.splitlines() if line.startswith("web:"))
    args = web.format(address="127.0.0.1", port=port, workers=2).split()
    assert args[0] == "gunicorn"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args[1:]],
        env=env,
        cwd=CHIRP_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["X-Chirp-Release"] == "rel-gunicorn"
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/users", data=b'{"name": "gu"}', headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 201
    finally:
        proc.terminate()
        proc.wait(15)


assert MASTER  # the fixture's master name is what CHIRP_REDIS_MASTER names


# --- a password being rotated (deploykit secrets rotate) ---------------------------------------------------------


def test_while_the_password_is_rotated_the_previous_one_is_tried_after_the_new_one(settings: Any) -> None:
    """The first apply of a rotation gives the app the new password before the database holds it."""
    import psycopg2
    from chirp.config import Settings
    from chirp.db import Database

    rotating = dataclasses.replace(settings, db_password="not-yet-in-the-database",
                                   db_password_previous=settings.db_password)
    conn = Database(rotating).connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone() == (settings.db_user,)
    finally:
        conn.close()
    # outside a rotation (or with both wrong) a wrong password is the error it is
    for broken in (dataclasses.replace(settings, db_password="wrong", db_password_previous=None),
                   dataclasses.replace(settings, db_password="wrong", db_password_previous="wrong-too")):
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            Database(broken).connect()
    env = {"CHIRP_DB_PASSWORD": "new", "CHIRP_DB_PASSWORD_PREVIOUS": ""}
    assert Settings.from_env(env).db_password_previous is None
