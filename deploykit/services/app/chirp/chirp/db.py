"""PostgreSQL connections (one per thread) with the failover rules chirp relies on.

The app reaches the primary through HAProxy, which follows Patroni's leader. CHIRP_DB_HOST may list several
hosts (comma-separated: a site's load balancers, or every PostgreSQL member when there is none); libpq tries
them in order, each on CHIRP_DB_PORT (one port for all), and CONNECT_TIMEOUT_S bounds each attempt, so a
dead host (whose packets vanish, no refusal) costs at most that before the next is tried. After a failover
the old connection fails (reset, admin shutdown, or a read-only error from a demoted primary); the next
attempt connects afresh and HAProxy sends it to the new primary.

- Reads are retried once on a fresh connection.
- A write is retried once if it failed before COMMIT was sent (its transaction died with the connection).
- If COMMIT itself failed, the outcome is unknown: the write is retried only when the caller gave a
  `verify` query that tells whether it landed (posts carry a unique uid for that); otherwise the caller
  gets `Unavailable` (HTTP 503) rather than a risk of doing it twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from chirp.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds per host of CHIRP_DB_HOST before libpq gives up on it and tries the next (libpq's minimum is 2).
CONNECT_TIMEOUT_S = 2

# Errors after which the connection is dropped and a fresh one may succeed (failover, restart, network).
RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.ReadOnlySqlTransaction,
)


class Unavailable(Exception):
    """The database could not be reached or the outcome of a write is unknown."""


class Database:
    def __init__(self, settings: Settings, statement_timeout_ms: int | None = 5000) -> None:
        self.settings = settings
        self.statement_timeout_ms = statement_timeout_ms
        self._local = threading.local()

    def connect(self, autocommit: bool = False) -> psycopg2.extensions.connection:
        """A new connection, with the password, else (while it is being rotated: the database does not hold
        the new one yet) with the previous one."""
        s = self.settings
        try:
            conn = self._connect(s.db_password)
        except psycopg2.OperationalError as exc:
            if not s.db_password_previous or "password authentication failed" not in str(exc):
                raise
            conn = self._connect(s.db_password_previous)
        conn.autocommit = autocommit
        return conn

    def _connect(self, password: str) -> psycopg2.extensions.connection:
        s = self.settings
        options = f"-c statement_timeout={self.statement_timeout_ms}" if self.statement_timeout_ms else ""
        return psycopg2.connect(
            host=s.db_host,  # one host or several, comma-separated
            port=s.db_port,  # a single port: libpq uses it for every host
            dbname=s.db_name,
            user=s.db_user,
            password=password,
            connect_timeout=CONNECT_TIMEOUT_S,
            target_session_attrs="read-write",  # never a demoted primary (or, given several hosts, a replica)
            application_name="chirp",
            options=options,
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=2,
        )

    def _conn(self) -> psycopg2.extensions.connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def discard(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
                pass

    def close(self) -> None:
        self.discard()

    def _end(self, conn: psycopg2.extensions.connection | None) -> None:
        if conn is not None and not conn.closed:
            try:
                conn.rollback()
            except RETRYABLE:
                self.discard()

    def read(self, fn: Callable[[Any], T]) -> T:
        """fn(cursor) in a read transaction; one retry on a fresh connection after a connection error."""
        for attempt in (1, 2):
            conn = None
            try:
                conn = self._conn()
                with conn.cursor() as cur:
                    result = fn(cur)
                conn.rollback()
                return result
            except RETRYABLE as exc:
                log.warning("database read failed (attempt %d): %s", attempt, str(exc).strip())
                self.discard()
                if attempt == 2:
                    raise Unavailable(str(exc).strip() or type(exc).__name__) from exc
            except Exception:
                self._end(conn)
                raise
        raise AssertionError("unreachable")

    def write(self, fn: Callable[[Any], T], verify: Callable[[Any], T | None] | None = None) -> T:
        """fn(cursor) in a transaction, committed; see the module docstring for when it is retried."""
        for attempt in (1, 2):
            committing = False
            conn = None
            try:
                conn = self._conn()
                with conn.cursor() as cur:
                    result = fn(cur)
                committing = True
                conn.commit()
                return result
            except RETRYABLE as exc:
                log.warning(
                    "database write failed (attempt %d, %s): %s",
                    attempt,
                    "during commit" if committing else "before commit",
                    str(exc).strip(),
                )
                self.discard()
                if committing:
                    if verify is None:
                        raise Unavailable("the database connection failed during commit") from exc
                    try:
                        landed = self.read(verify)
                    except Unavailable:
                        raise Unavailable("the database connection failed during commit") from exc
                    if landed is not None:
                        return landed
                if attempt == 2:
                    raise Unavailable(str(exc).strip() or type(exc).__name__) from exc
            except Exception:
                self._end(conn)
                raise
        raise AssertionError("unreachable")
