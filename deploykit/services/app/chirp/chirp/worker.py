"""The fan-out worker: copies committed posts into their readers' Redis timelines.

PostgreSQL is the source of truth and the queue: a post is `fanned_out = false` until a worker has
written it to Redis (and, when the master has replicas, a replica confirmed it: WAIT). Each batch is
claimed with FOR UPDATE SKIP LOCKED, written to Redis, then marked in the same transaction; a crash at any
point leaves the posts unmarked and they are fanned out again (ZADD is idempotent). Workers on several
hosts share the work. NOTIFY wakes them at once; they also poll every second, so a lost notification
only delays. Until a post is fanned out the timeline read path takes it from PostgreSQL, and a wiped or
failed-over cache is rebuilt from PostgreSQL on read.
"""

from __future__ import annotations

import logging
import select
import signal
import threading
from typing import Any

from chirp import store
from chirp.cache import Cache, CacheError, NotReplicated
from chirp.config import Settings
from chirp.db import RETRYABLE, Database

log = logging.getLogger(__name__)
BATCH = 200


def fan_out_batch(db: Database, cache: Cache, limit: int = BATCH) -> int:
    """Fan out up to `limit` pending posts; how many were done (0: nothing pending)."""

    def work(cur: Any) -> int:
        claimed = store.claim_pending(cur, limit)
        if not claimed:
            return 0
        followers = store.followers_of(cur, sorted({author for _, author in claimed}))
        cache.fan_out([(post, [author, *followers[author]]) for post, author in claimed])
        store.mark_fanned_out(cur, [post["id"] for post, _ in claimed])
        return len(claimed)

    return db.write(work)


def fan_out_pending(db: Database, cache: Cache) -> int:
    total = 0
    while n := fan_out_batch(db, cache):
        total += n
    return total


class Worker:
    def __init__(self, settings: Settings, poll_s: float = 1.0) -> None:
        self.db = Database(settings, statement_timeout_ms=30000)
        self.cache = Cache(settings)
        self.poll_s = poll_s
        self.stopping = threading.Event()
        self._listen: Any = None

    def stop(self, *_: object) -> None:
        self.stopping.set()

    def _wait_for_posts(self) -> None:
        """Block until a NOTIFY arrives or poll_s passes (LISTEN connection re-made when it breaks)."""
        try:
            if self._listen is None or self._listen.closed:
                self._listen = self.db.connect(autocommit=True, session=True)  # LISTEN needs a session
                self._listen.cursor().execute(f"LISTEN {store.NOTIFY_CHANNEL}")
            if select.select([self._listen], [], [], self.poll_s) != ([], [], []):
                self._listen.poll()
                self._listen.notifies.clear()
        except RETRYABLE as exc:
            log.warning("LISTEN connection failed: %s", str(exc).strip())
            self._listen = None
            self.stopping.wait(self.poll_s)

    def run(self) -> None:
        log.info("fan-out worker started")
        while not self.stopping.is_set():
            try:
                n = fan_out_pending(self.db, self.cache)
                if n:
                    log.info("fanned out %d posts", n)
            except (Exception, CacheError, NotReplicated) as exc:  # noqa: BLE001 - keep going; retried
                log.warning("fan-out failed, retrying: %s: %s", type(exc).__name__, exc)
                self.stopping.wait(self.poll_s)
                continue
            self._wait_for_posts()
        if self._listen is not None:
            self._listen.close()
        self.db.close()
        self.cache.close()
        log.info("fan-out worker stopped")


def run_worker(settings: Settings) -> None:
    worker = Worker(settings)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.run()
