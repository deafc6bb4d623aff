"""Local PostgreSQL 15, Redis and Sentinel processes for chirp's tests (the fixture is in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHIRP_DIR = REPO / "deploykit" / "services" / "app" / "chirp"
PG_BIN = Path(os.environ.get("CHIRP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
PASSWORD = "test-pass"
MASTER = "chirp-test"

if str(CHIRP_DIR) not in sys.path:
    sys.path.insert(0, str(CHIRP_DIR))


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1 that this process has not handed out before.

    The kernel may give the same ephemeral port to two bind(0) calls in a row once the first socket is closed
    (CI once gave PostgreSQL and Redis the same port, and every Redis test talked to PostgreSQL).
    """
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no fresh free port on 127.0.0.1 after 100 tries")


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def missing_requirements() -> str | None:
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL 15 binaries not in {PG_BIN} (apt-get install postgresql-15)"
    for tool in ("redis-server", "redis-sentinel"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install redis-server redis-sentinel)"
    for module in ("flask", "psycopg2", "redis"):
        try:
            __import__(module)
        except ImportError:
            return f"python module {module} missing (pip install -e '.[test]')"
    return None


@dataclass
class Services:
    root: Path
    pg_port: int
    redis_port: int
    sentinel_port: int
    as_user: list[str]
    redis: subprocess.Popen[bytes] | None = None
    sentinel: subprocess.Popen[bytes] | None = None
    pgbouncer: subprocess.Popen[bytes] | None = None
    pgbouncer_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    # PostgreSQL ---------------------------------------------------------------------------------------
    def pg_ctl(self, *args: str) -> None:
        cmd = [*self.as_user, str(PG_BIN / "pg_ctl"), "-D", str(self.root / "pg"), *args]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def start_pg(self) -> None:
        opts = f"-p {self.pg_port} -k {self.root / 'sock'} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", opts, "-l", str(self.root / "pg.log"), "-w", "start")

    def stop_pg(self) -> None:
        self.pg_ctl("-m", "fast", "-w", "stop")

    def psql(self, sql: str, db: str = "postgres") -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname=db)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    def query(self, sql: str, args: tuple[Any, ...] = (), db: str = "chirp") -> list[tuple[Any, ...]]:
        """Rows of one statement, as the superuser, committed."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="postgres", dbname=db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    # PgBouncer 1.18 (as on the app hosts): `chirp` a transaction pool, `chirp_session` a session pool -------
    def start_pgbouncer(self, pool_size: int = 1, query_wait_timeout_s: float = 0) -> None:
        """One server connection per pool by default: a test saturates it by holding one transaction open."""
        self.pgbouncer_port = self.pgbouncer_port or free_port()  # a restart keeps the port
        d = self.root / "pgbouncer"
        d.mkdir(exist_ok=True)
        (d / "userlist.txt").write_text(f'"chirp" "{PASSWORD}"\n')
        server = f"host=127.0.0.1 port={self.pg_port} dbname=chirp"
        (d / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"chirp = {server} pool_mode=transaction "
            "connect_query='SET statement_timeout = 5000'\n"
            f"chirp_session = {server} pool_mode=session\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.pgbouncer_port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {d / 'userlist.txt'}\n"
            f"default_pool_size = {pool_size}\nquery_wait_timeout = {query_wait_timeout_s}\n"
            f"logfile = {d / 'pgbouncer.log'}\n"
        )
        if self.as_user:
            for path in (d, *d.iterdir()):
                shutil.chown(path, "nobody")
        self.pgbouncer = subprocess.Popen(
            [*self.as_user, PGBOUNCER, str(d / "pgbouncer.ini")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.pgbouncer_port)

    def stop_pgbouncer(self) -> None:
        if self.pgbouncer is not None:
            self.pgbouncer.terminate()
            self.pgbouncer.wait(10)
            self.pgbouncer = None

    # Redis ----------------------------------------------------------------------------------------------
    def redis_client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis_port, password=PASSWORD, socket_timeout=2)

    def start_redis(self) -> None:
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--requirepass",
                PASSWORD,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.redis_port)

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)
            self.redis = None

    def start_sentinel(self) -> None:
        conf = self.root / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.root}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.redis_port} 1\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
            f"sentinel down-after-milliseconds {MASTER} 60000\n"
        )
        self.sentinel = subprocess.Popen(
            ["redis-sentinel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.sentinel_port)

    def stop_all(self) -> None:
        for proc in (self.pgbouncer, self.sentinel, self.redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.pgbouncer = self.sentinel = self.redis = None
        if (self.root / "pg" / "postmaster.pid").exists():
            try:
                self.pg_ctl("-m", "immediate", "-w", "stop")
            except subprocess.SubprocessError:
                pass
