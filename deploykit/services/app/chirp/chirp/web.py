"""chirp's HTTP API (Flask). See apps/chirp/README.md for the endpoints."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, jsonify, request

from chirp import store
from chirp.cache import Cache, CacheError
from chirp.config import Settings
from chirp.db import Database, Unavailable
from chirp.health import Health

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TEXT = 500
MAX_LIMIT = 200


def error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def _body() -> dict[str, Any] | None:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else None


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and NAME.match(value) else None


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("chirp")
    app.config["SECRET_KEY"] = settings.secret_key
    db = Database(settings)
    cache = Cache(settings)
    health = Health(db, cache, settings.release, ttl_s=settings.health_ttl_s, grace_s=settings.health_grace_s)
    app.extensions["chirp"] = {"db": db, "cache": cache, "settings": settings}

    @app.after_request
    def release_header(resp: Response) -> Response:
        resp.headers["X-Chirp-Release"] = settings.release
        return resp

    @app.errorhandler(Unavailable)
    def unavailable(exc: Unavailable) -> tuple[Response, int]:
        return error(503, f"database unavailable: {exc}")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        body, status = health.get()
        return jsonify(body), status

    @app.post("/api/users")
    def create_user() -> tuple[Response, int]:
        data = _body()
        name = _name(data.get("name")) if data else None
        if name is None:
            return error(400, "expected JSON {\"name\": NAME} (1-64 letters, digits, '_', '.', '-')")
        user = db.write(lambda cur: store.create_user(cur, name))
        if user is None:
            return error(409, f"user {name!r} exists")
        return jsonify(user), 201

    @app.post("/api/posts")
    def create_post() -> tuple[Response, int]:
        data = _body() or {}
        author, text = _name(data.get("author")), data.get("text")
        if author is None or not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            return error(400, f'expected JSON {{"author": NAME, "text": TEXT}} (1-{MAX_TEXT} characters)')
        uid = str(uuid.uuid4())
        try:
            post = db.write(
                lambda cur: store.create_post(cur, uid, author, text), verify=lambda cur: store.post_by_uid(cur, uid)
            )
        except store.NotFound:
            return error(404, f"no user {author!r}")
        return jsonify(post), 201

    @app.get("/api/posts/<int:pid>")
    def get_post(pid: int) -> tuple[Response, int]:
        try:
            post = db.read(lambda cur: store.get_post(cur, pid))
        except Unavailable:
            try:
                post = cache.posts([pid]).get(pid)
            except CacheError:
                post = None
            if post is None:
                raise
        if post is None:
            return error(404, f"no post {pid}")
        return jsonify(post), 200

    @app.post("/api/follow")
    def follow() -> tuple[Response, int]:
        data = _body() or {}
        a, b = _name(data.get("follower")), _name(data.get("followee"))
        if a is None or b is None or a == b:
            return error(400, 'expected JSON {"follower": NAME, "followee": OTHER_NAME}')
        try:
            created = db.write(lambda cur: store.follow(cur, a, b))
        except store.NotFound as exc:
            return error(404, f"no user {exc.args[0]!r}")
        return jsonify({"follower": a, "followee": b, "created": created}), 201 if created else 200

    @app.get("/api/timeline/<name>")
    def timeline(name: str) -> tuple[Response, int]:
        try:
            limit = min(max(int(request.args.get("limit", "50")), 1), MAX_LIMIT)
        except ValueError:
            return error(400, "limit must be a number")
        body = read_timeline(db, cache, settings, name, limit)
        if body is None:
            return error(404, f"no user {name!r}")
        return jsonify(body), 200

    return app


def read_timeline(db: Database, cache: Cache, settings: Settings, name: str, limit: int) -> dict[str, Any] | None:
    """The home timeline, newest first: Redis's copy plus posts not fanned out yet; PostgreSQL's when the
    cached one is missing, stale or unreachable. None if the user does not exist."""
    db_error: Unavailable | None = None
    try:
        head = db.read(lambda cur: store.timeline_head(cur, name))
    except Unavailable as exc:
        head, db_error = None, exc
    if head is None and db_error is None:
        return None
    uid, version, pending = head if head else (None, None, [])
    posts: dict[int, dict[str, Any]] = {p["id"]: p for p in pending}
    source = "cache"
    ids: list[int] | None = None
    try:
        if uid is None:
            uid = cache.user_id(name)
        if uid is not None:
            ids = cache.read_timeline(uid, version, limit)
            if ids is not None:
                missing = [i for i in ids if i not in posts]
                posts.update(cache.posts(missing))
    except CacheError as exc:
        log.warning("cache unavailable, reading the timeline from PostgreSQL: %s", exc)
        ids = None
    if ids is None:
        if db_error is not None:
            raise db_error
        assert uid is not None and version is not None
        source = "db"
        rows = db.read(lambda cur: store.home_timeline(cur, uid, settings.timeline_length))
        try:
            cache.rebuild(uid, name, version, rows)
        except CacheError as exc:
            log.warning("could not store the timeline in the cache: %s", exc)
        ids = [p["id"] for p in rows]
        posts.update({p["id"]: p for p in rows})
    else:
        missing = [i for i in ids if i not in posts]
        if missing and db_error is None:
            posts.update(db.read(lambda cur: store.get_posts(cur, missing)))
    ordered = sorted({*ids, *(p["id"] for p in pending)} & posts.keys(), reverse=True)[:limit]
    return {"name": name, "source": source, "posts": [posts[i] for i in ordered]}
