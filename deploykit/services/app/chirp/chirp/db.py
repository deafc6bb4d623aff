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

Through PgBouncer (CHIRP_DB_POOLED=1) CHIRP_DB_NAME is a transaction pool: consecutive transactions of one
connection may run on different server sessions, so nothing may outlive a transaction there (no SET but SET
LOCAL, no session advisory lock, no LISTEN, no server-side prepared statement or WITH HOLD cursor: psycopg2
makes neither). PgBouncer 1.18 also refuses the `options` startup parameter, so the statement timeout is not
sent with it: the pool's connect_query sets DEFAULT_STATEMENT_TIMEOUT_MS, and a Database with another limit
(the worker's, migrate's none) sets its own with SET LOCAL in each transaction. Connections that need a
session (`session=True`: migrate's advisory lock, the worker's LISTEN) use CHIRP_DB_SESSION_NAME, PgBouncer's
session pool of the same database; there the limit is a plain SET (PgBouncer's reset query clears it).
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
# The web's statement timeout; through PgBouncer the transaction pool's connect_query sets this one.
DEFAULT_STATEMENT_TIMEOUT_MS = 5000

# Errors after which the connection is dropped and a fresh one may succeed (failover, restart, network).
RETRYABLE: tuple[type[BaseException], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.ReadOnlySqlTransaction,
)

# How a refused password reads: PostgreSQL's words, and PgBouncer's for a SCRAM login (its auth_file holds the
# password PostgreSQL holds, so during a rotation it refuses the new one as PostgreSQL would).
WRONG_PASSWORD = ("password authentication failed", "SASL authentication failed")

class Unavailable(Exception):
    """The database could not be reached or the outcome of a write is unknown."""


class PoolWaitTimeout(Exception):
    """PgBouncer found no free server connection for us within its query_wait_timeout, and hung up."""


def is_slow(exc: BaseException) -> bool:
    """The database answered "too busy", not "cannot serve": a statement timeout (or cancel), or PgBouncer
    giving up on waiting for a free server connection."""
    return isinstance(exc, psycopg2.errors.QueryCanceled | PoolWaitTimeout)


def _pool_wait_timeout(conn: psycopg2.extensions.connection | None) -> str | None:
    """PgBouncer's message if it hung up on `conn` for query_wait_timeout. psycopg2's exception only says
    "server closed the connection unexpectedly"; libpq's last message on the connection has PgBouncer's
    "FATAL:  query_wait_timeout" before that."""
    try:
        message = conn.info.error_message if conn is not None else None
    except psycopg2.Error:
        return None
    return message.strip() if message and "query_wait_timeout" in message else None


class Database:
    def __init__(self, settings: Settings, statement_timeout_ms: int | None = DEFAULT_STATEMENT_TIMEOUT_MS) -> None:
        self.settings = settings
        self.statement_timeout_ms = statement_timeout_ms
        self._local = threading.local()
        self._check_lock = threading.Lock()
        self._check_conn: psycopg2.extensions.connection | None = None

    def connect(self, autocommit: bool = False, session: bool = False) -> psycopg2.extensions.connection:
        """A new connection, with the password, else (while it is being rotated: the database does not hold
        the new one yet) with the previous one. `session`: to CHIRP_DB_SESSION_NAME, for what needs a session."""
        s = self.settings
        try:
            conn = psycopg2.connect(**self.connect_kwargs(s.db_password, session))
        except psycopg2.OperationalError as exc:
            if not s.db_password_previous or not any(m in str(exc) for m in WRONG_PASSWORD):
                raise
            conn = psycopg2.connect(**self.connect_kwargs(s.db_password_previous, session))
        conn.autocommit = autocommit
        if session and s.db_pooled:  # no `options` through PgBouncer: a real session takes a plain SET
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (self.statement_timeout_ms or 0,))
            if not autocommit:
                conn.commit()
        return conn

    def connect_kwargs(self, password: str, session: bool = False) -> dict[str, Any]:
        """psycopg2.connect's arguments."""
        s = self.settings
        kwargs: dict[str, Any] = {
            "host": s.db_host,  # one host or several, comma-separated
            "port": s.db_port,  # a single port: libpq uses it for every host
            "dbname": s.db_session if session else s.db_name,
            "user": s.db_user,
            "password": password,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "target_session_attrs": "read-write",  # never a demoted primary (or, given several hosts, a replica)
            "application_name": "chirp",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
        }
        if self.statement_timeout_ms and not s.db_pooled:  # PgBouncer 1.18 refuses the `options` parameter
            kwargs["options"] = f"-c statement_timeout={self.statement_timeout_ms}"
        return kwargs

    def _begin(self, cur: Any) -> None:
        """The statement timeout of a transaction through PgBouncer, when it is not the pool's."""
        if self.settings.db_pooled and self.statement_timeout_ms != DEFAULT_STATEMENT_TIMEOUT_MS:
            cur.execute("SET LOCAL statement_timeout = %s", (self.statement_timeout_ms or 0,))

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
        with self._check_lock:
            self._drop_check_conn()

    def check(self, fn: Callable[[Any], T], timeout_ms: int) -> T:
        """fn(cursor) in a read transaction that the database ends after `timeout_ms` (SET LOCAL
        statement_timeout), on a connection kept for checks. Retried once on a fresh connection when the
        kept one fails as after a failover; the caller judges any other error (`is_slow`). One check at a
        time: a second caller waits for the first."""
        with self._check_lock:
            for attempt in (1, 2):
                conn = self._check_conn
                fresh = conn is None or bool(conn.closed)
                try:
                    if conn is None or conn.closed:
                        conn = self._check_conn = self.connect()
                    with conn.cursor() as cur:
                        cur.execute("SET LOCAL statement_timeout = %s", (timeout_ms,))
                        result = fn(cur)
                    conn.rollback()
                    return result
                except BaseException as exc:
                    waited = _pool_wait_timeout(self._check_conn)
                    broken = isinstance(exc, RETRYABLE) and not is_slow(exc) and not waited
                    self._end_check(keep=not broken)
                    if waited:
                        raise PoolWaitTimeout(waited) from exc
                    if fresh or not broken or attempt == 2:
                        raise
                    log.warning("database check failed on a kept connection, retrying: %s", str(exc).strip())
        raise AssertionError("unreachable")

    def _end_check(self, keep: bool) -> None:
        """Roll the check's transaction back (after a statement timeout the connection is fine), or drop it."""
        conn = self._check_conn
        if keep and conn is not None and not conn.closed:
            try:
                conn.rollback()
                return
            except Exception:  # noqa: BLE001 - the connection is broken after all
                pass
        self._drop_check_conn()

    def _drop_check_conn(self) -> None:
        conn, self._check_conn = self._check_conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail in any way
                pass

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
                    self._begin(cur)
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
                    self._begin(cur)
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
