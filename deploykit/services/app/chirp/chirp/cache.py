"""Home timelines in Redis, reached through Sentinel (which re-discovers the master after a failover).

Keys:
  chirp:tl:<user id>    sorted set of post ids (score = id), the newest `timeline_length` kept
  chirp:tlok:<user id>  the user's follow_version the timeline was built for; a timeline counts only while
                        this equals the database's value (a new follow, or a wiped cache, rebuilds it)
  chirp:post:<id>       the post as JSON (posts never change)
  chirp:uid:<name>      user id by name, to serve cached timelines while PostgreSQL is unreachable
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from redis.sentinel import Sentinel

from chirp.config import Settings

log = logging.getLogger(__name__)
TIMEOUT_S = 0.5
REPLICA_WAIT_MS = 1000

CacheError = redis.exceptions.RedisError


class NotReplicated(Exception):
    """No replica confirmed a fan-out write in time: it could be lost if the master failed now."""


def _tl(uid: int) -> str:
    return f"chirp:tl:{uid}"


def _ok(uid: int) -> str:
    return f"chirp:tlok:{uid}"


def _post(pid: int) -> str:
    return f"chirp:post:{pid}"


class Cache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        timeouts = {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
        sentinel_kwargs: dict[str, Any] = dict(timeouts)
        if settings.sentinel_password:
            sentinel_kwargs["password"] = settings.sentinel_password
        self.sentinel = Sentinel(list(settings.sentinels), sentinel_kwargs=sentinel_kwargs, **timeouts)
        self.master = self.sentinel.master_for(settings.redis_master, password=settings.redis_password, **timeouts)

    def close(self) -> None:
        self.master.connection_pool.disconnect()

    def ping(self) -> str:
        """The master's address (raises CacheError if there is none or it does not answer)."""
        host, port = self.sentinel.discover_master(self.settings.redis_master)
        self.master.ping()
        return f"{host}:{port}"

    def fan_out(self, posts: list[tuple[dict[str, Any], list[int]]]) -> None:
        """Add each post to its readers' timelines (idempotent: ZADD of the same id changes nothing)."""
        keep = self.settings.timeline_length
        touched: set[int] = set()
        pipe = self.master.pipeline(transaction=True)
        for post, readers in posts:
            pipe.set(_post(post["id"]), json.dumps(post))
            for uid in readers:
                pipe.zadd(_tl(uid), {str(post["id"]): post["id"]})
                touched.add(uid)
        for uid in sorted(touched):
            pipe.zremrangebyrank(_tl(uid), 0, -(keep + 1))
        pipe.execute()
        replicas = int(self.master.info("replication").get("connected_slaves", 0))
        if replicas and int(self.master.wait(1, REPLICA_WAIT_MS)) < 1:
            raise NotReplicated(f"no replica of {replicas} confirmed the fan-out within {REPLICA_WAIT_MS} ms")

    def user_id(self, name: str) -> int | None:
        value = self.master.get(f"chirp:uid:{name}")
        return None if value is None else int(value)

    def read_timeline(self, uid: int, version: int | None, limit: int) -> list[int] | None:
        """Post ids, newest first; None if the cached timeline is missing or stale.

        `version` None (database unreachable) accepts whatever timeline was built last.
        """
        pipe = self.master.pipeline(transaction=False)
        pipe.get(_ok(uid))
        pipe.zrevrange(_tl(uid), 0, limit - 1)
        built_for, ids = pipe.execute()
        if built_for is None or (version is not None and int(built_for) != version):
            return None
        return [int(i) for i in ids]

    def posts(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        values = self.master.mget([_post(i) for i in ids])
        return {i: json.loads(v) for i, v in zip(ids, values, strict=True) if v is not None}

    def rebuild(self, uid: int, name: str, version: int, posts: list[dict[str, Any]]) -> None:
        """Store a timeline read from PostgreSQL. Adds to (never replaces) the sorted set, so a post the
        worker fanned out meanwhile stays; marks it valid for `version` only."""
        pipe = self.master.pipeline(transaction=True)
        if posts:
            pipe.zadd(_tl(uid), {str(p["id"]): p["id"] for p in posts})
            pipe.zremrangebyrank(_tl(uid), 0, -(self.settings.timeline_length + 1))
            for p in posts:
                pipe.set(_post(p["id"]), json.dumps(p), nx=True)
        pipe.set(_ok(uid), version)
        pipe.set(f"chirp:uid:{name}", uid)
        pipe.execute()
