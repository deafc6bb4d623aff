"""chirp's SQL: each function takes a psycopg2 cursor inside a transaction the caller manages."""

from __future__ import annotations

from typing import Any

POST_COLUMNS = "p.id, u.name, p.text, p.created_at"
POST_FROM = "posts p JOIN users u ON u.id = p.author_id"
NOTIFY_CHANNEL = "chirp_posts"


class NotFound(Exception):
    pass


def post_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "author": row[1], "text": row[2], "created_at": row[3].isoformat()}


def create_user(cur: Any, name: str) -> dict[str, Any] | None:
    """The new user, or None if the name is taken."""
    cur.execute("INSERT INTO users (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING created_at", (name,))
    row = cur.fetchone()
    return None if row is None else {"name": name, "created_at": row[0].isoformat()}


def user_id(cur: Any, name: str) -> int:
    cur.execute("SELECT id FROM users WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None:
        raise NotFound(name)
    return int(row[0])


def create_post(cur: Any, uid: str, author: str, text: str) -> dict[str, Any]:
    author_id = user_id(cur, author)
    cur.execute(
        "INSERT INTO posts (uid, author_id, text) VALUES (%s::uuid, %s, %s) RETURNING id, created_at",
        (uid, author_id, text),
    )
    pid, created = cur.fetchone()
    cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")  # delivered at commit: wakes the fan-out workers
    return {"id": pid, "author": author, "text": text, "created_at": created.isoformat()}


def post_by_uid(cur: Any, uid: str) -> dict[str, Any] | None:
    cur.execute(f"SELECT {POST_COLUMNS} FROM {POST_FROM} WHERE p.uid = %s::uuid", (uid,))
    row = cur.fetchone()
    return None if row is None else post_row(row)


def get_post(cur: Any, pid: int) -> dict[str, Any] | None:
    cur.execute(f"SELECT {POST_COLUMNS} FROM {POST_FROM} WHERE p.id = %s", (pid,))
    row = cur.fetchone()
    return None if row is None else post_row(row)


def get_posts(cur: Any, ids: list[int]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    cur.execute(f"SELECT {POST_COLUMNS} FROM {POST_FROM} WHERE p.id = ANY(%s)", (ids,))
    return {row[0]: post_row(row) for row in cur.fetchall()}


def follow(cur: Any, follower: str, followee: str) -> bool:
    """True if the follow is new. Bumps the follower's follow_version, invalidating the cached timeline."""
    a, b = user_id(cur, follower), user_id(cur, followee)
    cur.execute(
        "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1", (a, b)
    )
    if cur.fetchone() is None:
        return False
    cur.execute("UPDATE users SET follow_version = follow_version + 1 WHERE id = %s", (a,))
    return True


HOME = "(p.author_id = %(uid)s OR p.author_id IN (SELECT followee_id FROM follows WHERE follower_id = %(uid)s))"


def timeline_head(cur: Any, name: str) -> tuple[int, int, list[dict[str, Any]]] | None:
    """(user id, follow_version, posts of the home timeline not fanned out yet), None if no such user.

    The pending posts come from a small partial index: a post is in timelines from its commit on, even
    before the worker has copied it to Redis.
    """
    cur.execute("SELECT id, follow_version FROM users WHERE name = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return None
    uid, version = int(row[0]), int(row[1])
    cur.execute(
        f"SELECT {POST_COLUMNS} FROM {POST_FROM} WHERE NOT p.fanned_out AND {HOME} ORDER BY p.id DESC LIMIT 1000",
        {"uid": uid},
    )
    return uid, version, [post_row(r) for r in cur.fetchall()]


def home_timeline(cur: Any, uid: int, limit: int) -> list[dict[str, Any]]:
    cur.execute(
        f"SELECT {POST_COLUMNS} FROM {POST_FROM} WHERE {HOME} ORDER BY p.id DESC LIMIT %(limit)s",
        {"uid": uid, "limit": limit},
    )
    return [post_row(r) for r in cur.fetchall()]


def claim_pending(cur: Any, limit: int) -> list[tuple[dict[str, Any], int]]:
    """Posts not fanned out yet, oldest first, locked for this transaction (other workers skip them)."""
    cur.execute(
        f"SELECT {POST_COLUMNS}, p.author_id FROM {POST_FROM} WHERE NOT p.fanned_out "
        "ORDER BY p.id LIMIT %s FOR UPDATE OF p SKIP LOCKED",
        (limit,),
    )
    return [(post_row(r), int(r[4])) for r in cur.fetchall()]


def followers_of(cur: Any, author_ids: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {a: [] for a in author_ids}
    cur.execute("SELECT followee_id, follower_id FROM follows WHERE followee_id = ANY(%s) ORDER BY 1, 2", (author_ids,))
    for followee, follower in cur.fetchall():
        out[int(followee)].append(int(follower))
    return out


def mark_fanned_out(cur: Any, ids: list[int]) -> None:
    cur.execute("UPDATE posts SET fanned_out = true WHERE id = ANY(%s)", (ids,))
