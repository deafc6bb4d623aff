"""chirp's settings, from the environment (systemd loads /etc/chirp/chirp.env into it).

Commands run by hand (`python3 -m chirp migrate`) read the env file themselves: variables already in the
environment win over the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_ENV_FILE = "/etc/chirp/chirp.env"


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile reads them (comments, optional double quotes)."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key] = value
    return out


def load_env_file(path: str | None = None) -> None:
    path = path or os.environ.get("CHIRP_ENV_FILE", DEFAULT_ENV_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            values = parse_env_file(f.read())
    except OSError:
        return
    for key, value in values.items():
        os.environ.setdefault(key, value)


@dataclass(frozen=True)
class Settings:
    db_host: str
    db_port: int
    db_name: str
    db_user: str
    db_password: str
    db_password_previous: str | None  # also tried while the password is being rotated (deploykit secrets rotate)
    sentinels: tuple[tuple[str, int], ...]
    redis_master: str
    redis_password: str | None
    sentinel_password: str | None
    release: str
    secret_key: str
    timeline_length: int = 200  # newest posts kept per home timeline in Redis
    health_ttl_s: float = 1.0  # /healthz answers from a result at most this old
    # /healthz stays 200 ("degraded") while the database is only slow, up to this long after it last answered
    health_grace_s: float = 15.0
    db_session_name: str | None = None  # dbname for connections that need a session (None: db_name)
    db_pooled: bool = False  # db_name is a PgBouncer transaction pool: no `options`, nothing session-bound

    @property
    def db_session(self) -> str:
        """The dbname of connections that need a real session: migrate's advisory lock, the worker's LISTEN
        (PgBouncer's session pool of the same database when the app goes through PgBouncer)."""
        return self.db_session_name or self.db_name

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        e = dict(os.environ if env is None else env)
        sentinels = []
        for item in e.get("CHIRP_SENTINELS", "").split(","):
            item = item.strip()
            if item:
                host, _, port = item.rpartition(":")
                sentinels.append((host, int(port)))
        return cls(
            db_host=e.get("CHIRP_DB_HOST", "127.0.0.1"),
            db_port=int(e.get("CHIRP_DB_PORT", "5432")),
            db_name=e.get("CHIRP_DB_NAME", "chirp"),
            db_user=e.get("CHIRP_DB_USER", "chirp"),
            db_password=e.get("CHIRP_DB_PASSWORD", ""),
            db_password_previous=e.get("CHIRP_DB_PASSWORD_PREVIOUS") or None,
            sentinels=tuple(sentinels),
            redis_master=e.get("CHIRP_REDIS_MASTER", "chirp"),
            redis_password=e.get("CHIRP_REDIS_PASSWORD") or None,
            sentinel_password=e.get("CHIRP_SENTINEL_PASSWORD") or None,
            release=e.get("CHIRP_RELEASE", "dev"),
            secret_key=e.get("CHIRP_SECRET_KEY", "dev"),
            timeline_length=int(e.get("CHIRP_TIMELINE_LENGTH", "200")),
            health_ttl_s=float(e.get("CHIRP_HEALTH_TTL_S", "1.0")),
            health_grace_s=float(e.get("CHIRP_HEALTH_GRACE_S", "15")),
            db_session_name=e.get("CHIRP_DB_SESSION_NAME") or None,
            db_pooled=_flag(e, "CHIRP_DB_POOLED"),
        )


def _flag(env: dict[str, str], key: str) -> bool:
    value = env.get(key, "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"{key} must be 1 or 0, not {value!r}")
    return value == "1"
