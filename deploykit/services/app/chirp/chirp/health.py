"""/healthz: whether this app host can serve, answered within HAProxy's check timeout whatever the database does.

HAProxy asks every second from every load balancer (`timeout check 2s`, down after 2 failures). Every app host
shares the database, so a /healthz that failed whenever the database is merely busy would take every host out
at once. The check tells the two apart:

- The database part runs in its own thread, bounded by DB_BUDGET_S: a `SET LOCAL statement_timeout` of 80% of
  it inside the check's transaction (so the database's own cancel, with its message, normally comes first),
  and the answer does not wait longer than the budget for it (a connection, PgBouncer's pool slot). One
  database check is in flight per process at a time; one that overruns goes on in the background and the next
  answers report it as still running.
- "down" (refused, authentication failed, unreachable, read-only server, any other error): 503 at once.
- "slow" (statement timeout, PgBouncer's query_wait_timeout, no answer within the budget): 200 "degraded"
  while the database answered within the budget at most `grace_s` ago (and has not been down since), 503 after.
- Redis is pinged meanwhile (its own 0.5 s timeouts); an unreachable master is a 503.

The answer is kept `ttl_s`; while one request thread computes it, the others get the previous answer rather
than pile up behind it (only the very first requests wait).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2.errors

from chirp.cache import Cache
from chirp.db import Database, is_slow
from chirp.migrate import schema_version

DB_BUDGET_S = 1.0  # within HAProxy's 2 s check timeout, with room for the Redis ping and the HTTP round trip


def db_check(cur: Any) -> int:
    """What the database part of the check asks: a writable primary, and its schema version."""
    cur.execute("SELECT current_setting('transaction_read_only')")
    if cur.fetchone()[0] == "on":
        raise psycopg2.errors.ReadOnlySqlTransaction("the database is read-only (a replica or a demoted primary)")
    return schema_version(cur)


@dataclass
class DbProbe:
    """One run of the database check, in its own thread."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    finished: float = 0.0
    in_budget: bool = False  # answered (or failed) within the budget
    schema: int | None = None
    error: BaseException | None = None


class Health:
    def __init__(
        self,
        db: Database,
        cache: Cache,
        release: str,
        ttl_s: float,
        grace_s: float = 15.0,
        budget_s: float = DB_BUDGET_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db, self.cache, self.release = db, cache, release
        self.ttl_s, self.grace_s, self.budget_s, self.clock = ttl_s, grace_s, budget_s, clock
        self._computing = threading.Lock()  # one request thread computes the answer
        self._state = threading.Lock()  # _probe and _ok_at, also written by the probe's thread
        self._answer: tuple[tuple[dict[str, Any], int], float] | None = None  # (body, status), when computed
        self._probe: DbProbe | None = None
        self._ok_at: float | None = None  # when the database last answered within the budget (None: down since)

    def get(self) -> tuple[dict[str, Any], int]:
        """(JSON body, HTTP status)."""
        cached = self._answer
        if cached is not None and self.clock() - cached[1] < self.ttl_s:
            return cached[0]
        if cached is None:
            self._computing.acquire()  # nothing to answer yet: wait for the first check (bounded by the budget)
        elif not self._computing.acquire(blocking=False):
            return cached[0]  # another thread is computing it: no second check, no thread piling up
        try:
            cached = self._answer
            if cached is not None and self.clock() - cached[1] < self.ttl_s:
                return cached[0]
            answer = self._compute()
            self._answer = (answer, self.clock())
            return answer
        finally:
            self._computing.release()

    def _compute(self) -> tuple[dict[str, Any], int]:
        probe = self._start_probe()
        out: dict[str, Any] = {"release": self.release, "host": socket.gethostname()}
        out["cache"] = self._check_cache()  # while the database check runs
        probe.done.wait(max(0.0, probe.started + self.budget_s - self.clock()))
        out["db"] = self._judge(probe)
        slow = out["db"].get("slow", False)
        ok = out["db"]["ok"] and out["cache"]["ok"]
        out["status"] = "fail" if not ok else "degraded" if slow else "ok"
        return out, 200 if ok else 503

    def _start_probe(self) -> DbProbe:
        """A new database check, or the one still running (never two at once)."""
        with self._state:
            if self._probe is None or self._probe.done.is_set():
                self._probe = DbProbe(started=self.clock())
                thread = threading.Thread(target=self._run, args=(self._probe,), name="chirp-health-db", daemon=True)
                thread.start()
            return self._probe

    def _run(self, probe: DbProbe) -> None:
        try:
            probe.schema = self.db.check(db_check, timeout_ms=max(1, round(self.budget_s * 800)))
        except Exception as exc:  # noqa: BLE001 - judged by _judge
            probe.error = exc
        probe.finished = self.clock()
        probe.in_budget = probe.finished - probe.started <= self.budget_s
        with self._state:
            if probe.error is None and probe.in_budget:
                self._ok_at = probe.finished
            elif probe.error is not None and not is_slow(probe.error):
                self._ok_at = None  # down: a slow answer after this is no longer given the grace
        probe.done.set()

    def _judge(self, probe: DbProbe) -> dict[str, Any]:
        now = self.clock()
        budget_ms = round(self.budget_s * 1000)
        if not probe.done.is_set():
            ms, error = (now - probe.started) * 1000, f"no answer within {budget_ms} ms (check still running)"
        else:
            ms = (probe.finished - probe.started) * 1000
            if probe.error is not None and not is_slow(probe.error):
                return {"ok": False, "error": _text(probe.error), "ms": round(ms, 1)}
            if probe.error is None and probe.in_budget:
                return {"ok": True, "schema": probe.schema, "ms": round(ms, 1)}
            error = _text(probe.error) if probe.error else f"answered after {round(ms)} ms (budget {budget_ms} ms)"
        with self._state:
            ok_at = self._ok_at
        last_ok_s = None if ok_at is None else round(now - ok_at, 1)
        graced = ok_at is not None and now - ok_at <= self.grace_s
        return {"ok": graced, "slow": True, "error": error, "last_ok_s": last_ok_s, "ms": round(ms, 1)}

    def _check_cache(self) -> dict[str, Any]:
        start = self.clock()
        try:
            out: dict[str, Any] = {"ok": True, "master": self.cache.ping()}
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
        out["ms"] = round((self.clock() - start) * 1000, 1)
        return out


def _text(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__)[:200]
