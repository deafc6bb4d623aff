"""Schema migrations: `python3 -m chirp migrate`, idempotent and safe to run from several hosts at once.

A session-level advisory lock serialises concurrent runs (so it connects to CHIRP_DB_SESSION_NAME, never to a
transaction pool); each migration is applied in its own transaction together with its row in `chirp_schema`,
so a run that dies half-way resumes cleanly.
Migrations only add (expand): the previous release keeps working during a rolling release.
"""

from __future__ import annotations

from chirp.db import Database

LOCK_ID = 0x636869727001  # "chirp" + 1: the advisory lock key every chirp migrate takes

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    follow_version bigint NOT NULL DEFAULT 0,  -- bumped by every new follow: invalidates cached timelines
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE follows (
    follower_id bigint NOT NULL REFERENCES users (id),
    followee_id bigint NOT NULL REFERENCES users (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (follower_id, followee_id),
    CHECK (follower_id <> followee_id)
);
CREATE INDEX follows_followee ON follows (followee_id);
CREATE TABLE posts (
    id bigserial PRIMARY KEY,
    uid uuid NOT NULL UNIQUE,  -- chosen by the app: tells whether a commit whose reply was lost landed
    author_id bigint NOT NULL REFERENCES users (id),
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    fanned_out boolean NOT NULL DEFAULT false
);
CREATE INDEX posts_author ON posts (author_id, id DESC);
CREATE INDEX posts_pending ON posts (id) WHERE NOT fanned_out;
""",
    ),
)

LATEST = MIGRATIONS[-1][0]


def migrate(db: Database) -> tuple[list[int], int]:
    """Apply every missing migration; the versions applied now and the schema version after."""
    conn = db.connect(session=True)  # the lock lives as long as the session: never a transaction pool
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
            conn.commit()
            try:
                cur.execute(
                    "CREATE TABLE IF NOT EXISTS chirp_schema "
                    "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                conn.commit()
                cur.execute("SELECT version FROM chirp_schema")
                done = {row[0] for row in cur.fetchall()}
                conn.commit()
                applied = []
                for version, sql in MIGRATIONS:
                    if version in done:
                        continue
                    cur.execute(sql)
                    cur.execute("INSERT INTO chirp_schema (version) VALUES (%s)", (version,))
                    conn.commit()
                    applied.append(version)
                    done.add(version)
            finally:
                conn.rollback()
                cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
                conn.commit()
        return applied, max(done) if done else 0
    finally:
        conn.close()


def schema_version(cur: object) -> int:
    """The applied schema version (0 before the first migrate); cur is a psycopg2 cursor."""
    cur.execute("SELECT to_regclass('chirp_schema') IS NOT NULL")  # type: ignore[attr-defined]
    if not cur.fetchone()[0]:  # type: ignore[attr-defined]
        return 0
    cur.execute("SELECT coalesce(max(version), 0) FROM chirp_schema")  # type: ignore[attr-defined]
    return int(cur.fetchone()[0])  # type: ignore[attr-defined]
