"""Per-host configuration of the `app` and `worker` roles: which app, where its code goes, how it is run,
and how it reaches PostgreSQL and Redis.

The app is any directory of text files (default: the bundled chirp demo, ./chirp beside this module) with a Procfile
naming its processes: `web` (served on every app host; `services.app.command` overrides it), `worker` (run
on every worker host) and `release` (run once per deploy on one app host, e.g. migrations). `{address}`,
`{port}` and `{workers}` in the commands are filled in per host; `{address}` is the host's mesh address,
where the load balancers' app backends reach it (docs/network.md).

Everything the app talks to is on the WireGuard mesh. It reaches the PostgreSQL primary through HAProxy's
db-primary frontend on the mesh addresses of a site's load balancers (its own site's when that site has
some, else the first site's that has some): a comma-separated host list, which libpq tries in order with
one port for all (chirp sets connect_timeout, so a dead load balancer costs at most that before the next).
Without any load balancer it gets every db member's mesh address, at the pooler's port, and must pick the
read-write one (chirp asks libpq for target_session_attrs=read-write). Either way its connections end in the
pooler (PgBouncer) on the primary (services/pooler): DB_NAME is the transaction pool, DB_SESSION_NAME the
session pool for what needs a session (the migrations' advisory lock, the worker's LISTEN), and DB_POOLED=1
tells it that no `options` startup parameter may be sent (the pool sets statement_timeout). Redis it finds
through every sentinel's mesh address. The
release id is a hash of the app's files and of how it is run, the same on every host, so a rolling release
can be followed host by host (chirp shows it in /healthz).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from deploykit.errors import DeploykitError
from deploykit.inventory.model import Host, Inventory
from deploykit.inventory.names import natural_key
from deploykit.secret import Secret
from deploykit.services.cache.config import CACHE_PASSWORD
from deploykit.services.cache.placement import cache_plan
from deploykit.services.contract import ConfigContext
from deploykit.services.db.config import APP_DATABASE, APP_PASSWORD, APP_USER, primary_load_balancers
from deploykit.services.db.placement import db_plan
from deploykit.services.pooler.config import SESSION_DATABASE

BUNDLED_APP = Path(__file__).resolve().parent / "chirp"  # package data: installed with deploykit
SECRET_KEY = "app-secret-key"  # the secret this service owns (it reads the db and cache passwords too)
PROCESSES = ("web", "worker", "release")
SKIP_DIRS = frozenset(
    {"__pycache__", ".git", ".hg", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", "node_modules"}
)
SKIP_SUFFIXES = (".pyc", ".pyo")
MAX_FILES = 2000
MAX_BYTES = 8 * 1024 * 1024  # the whole tree: it travels as managed files
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class AppSourceError(DeploykitError):
    """The app's directory cannot be deployed (missing, not text, no command for a process)."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str  # relative to the app directory, '/'-separated
    content: str
    mode: str  # "0644", or "0755" for files executable in the source


@dataclass(frozen=True, slots=True)
class AppSource:
    name: str  # names the system user, the units, /opt/<name> and /etc/<name>
    directory: Path
    files: tuple[SourceFile, ...]  # sorted by path
    processes: dict[str, str]  # Procfile: process -> command (with {address}/{port}/{workers})


@dataclass(frozen=True, slots=True)
class AppHostConfig:
    host: str
    mesh_address: IPv4Address  # where the web processes listen (the load balancers' app backend)
    runs_web: bool  # the host has the app role
    runs_worker: bool  # the host has the worker role
    name: str
    user: str
    source: AppSource
    install_dir: str  # /opt/<name>/app
    env_path: str  # /etc/<name>/<name>.env
    env_prefix: str  # CHIRP_
    release: str
    port: int
    health: str
    workers: int
    web_command: str | None  # placeholders filled in
    worker_command: str | None
    release_command: str | None
    # Comma-separated mesh addresses: the load balancers serving the primary (HAProxy -> the primary's
    # pooler), or without any, every db member (its pooler); libpq tries them in order, db_port on each.
    db_host: str
    db_port: int
    db_name: str  # the pooler's transaction pool
    db_session_name: str  # the pooler's session pool (advisory locks, LISTEN)
    db_user: str
    db_password: Secret
    # While a rotation of the app role's password is under way: the value the database still holds until the
    # rotation's second apply changes it (the app tries db_password first, then this one).
    db_password_previous: Secret | None
    sentinels: tuple[str, ...]  # <mesh address>:port of every sentinel, by host name
    redis_master: str  # the name the sentinels monitor
    cache_password: Secret  # Redis requirepass; the sentinels require it too
    secret_key: Secret

    @property
    def web_unit(self) -> str:
        return self.name

    @property
    def worker_unit(self) -> str:
        return f"{self.name}-worker"

    @property
    def release_unit(self) -> str:
        return f"{self.name}-release"

    @property
    def health_url(self) -> str:
        return f"http://{self.mesh_address}:{self.port}{self.health}"

    def environment(self) -> tuple[tuple[str, str | Secret], ...]:
        """The env file's variables, in file order (values that are secrets stay Secret)."""
        p = self.env_prefix
        return (
            (f"{p}RELEASE", self.release),
            (f"{p}DB_HOST", self.db_host),
            (f"{p}DB_PORT", str(self.db_port)),
            (f"{p}DB_NAME", self.db_name),
            (f"{p}DB_SESSION_NAME", self.db_session_name),
            (f"{p}DB_POOLED", "1"),
            (f"{p}DB_USER", self.db_user),
            (f"{p}DB_PASSWORD", self.db_password),
            (f"{p}DB_PASSWORD_PREVIOUS", self.db_password_previous or ""),
            (f"{p}SENTINELS", ",".join(self.sentinels)),
            (f"{p}REDIS_MASTER", self.redis_master),
            (f"{p}REDIS_PASSWORD", self.cache_password),
            (f"{p}SENTINEL_PASSWORD", self.cache_password),
            (f"{p}SECRET_KEY", self.secret_key),
        )


def parse_procfile(text: str, where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        name, command = name.strip(), command.strip()
        if not sep or not command or name not in PROCESSES or name in out:
            raise AppSourceError(
                f"{where}:{n}: expected one `web:`, `worker:` or `release:` line per process "
                f"followed by its command, got {raw.strip()!r}"
            )
        out[name] = command
    return out


def read_source(directory: Path, name: str) -> AppSource:
    """Every text file of the app's directory (caches and VCS data skipped), read now: the plan holds it."""
    if not directory.is_dir():
        raise AppSourceError(f"{directory}: the app's source directory does not exist (services.app.source)")
    files: list[SourceFile] = []
    total = 0
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part in SKIP_DIRS for part in rel.parts) or path.suffix in SKIP_SUFFIXES or not path.is_file():
            continue
        raw = path.read_bytes()
        total += len(raw)
        if len(files) >= MAX_FILES or total > MAX_BYTES:
            raise AppSourceError(
                f"{directory}: more than {MAX_FILES} files or {MAX_BYTES} bytes; deploy only the app's own files"
            )
        try:
            if b"\x00" in raw:
                raise UnicodeDecodeError("utf-8", raw, 0, 1, "NUL byte")
            content = raw.decode("utf-8")
        except UnicodeDecodeError:
            msg = f"{path}: not a UTF-8 text file; the app's directory may hold only text files"
            raise AppSourceError(msg) from None
        files.append(SourceFile(rel.as_posix(), content, "0755" if path.stat().st_mode & 0o111 else "0644"))
    procfile = directory / "Procfile"
    processes = parse_procfile(procfile.read_text(encoding="utf-8"), str(procfile)) if procfile.is_file() else {}
    return AppSource(name, directory, tuple(files), processes)


def app_name(inv: Inventory) -> str:
    if inv.services.app.source is None:
        return "chirp"
    base = (inv.directory / inv.services.app.source).resolve().name.lower().replace("_", "-")
    if not NAME.match(base):
        raise AppSourceError(
            f"{inv.path}: services.app.source: the directory's name {base!r} names the app's "
            "user and units: use 1-31 lower-case letters, digits or '-', starting with a letter"
        )
    return base


def app_source(inv: Inventory) -> AppSource:
    svc = inv.services.app
    directory = BUNDLED_APP if svc.source is None else (inv.directory / svc.source).resolve()
    return read_source(directory, app_name(inv))


def release_id(source: AppSource, web: str | None, inv: Inventory) -> str:
    """Hash of the app's files and of how it is run: equal on every host, new with any change."""
    svc = inv.services.app
    h = hashlib.sha256()
    for f in source.files:
        h.update(f"{f.path}\0{f.mode}\0".encode())
        h.update(f.content.encode())
        h.update(b"\0")
    for part in (
        web,
        source.processes.get("worker"),
        source.processes.get("release"),
        svc.port,
        svc.health,
        svc.workers,
    ):
        h.update(f"{part}\0".encode())
    return h.hexdigest()[:12]


def db_endpoint(ctx: ConfigContext, host: Host) -> tuple[str, int]:
    """The hosts (comma-separated mesh addresses, tried in order) and the port the app connects to.

    Through load balancers: in VRRP priority order, the host itself first when it is one of them (no hop,
    and the site's app hosts that are load balancers spread their connections over them). Without any: every
    db member's pooler."""
    inv = ctx.inv
    lbs = primary_load_balancers(ctx.placement, host.site)
    if lbs:
        names = sorted((m.name for m in lbs), key=lambda name: name != host.name)  # stable: priority order kept
        return ",".join(str(inv.host(name).mesh_address) for name in names), inv.services.lb.db_primary_port
    db = db_plan(ctx.placement)
    return ",".join(str(inv.host(m.name).mesh_address) for m in db.members), inv.services.pooler.port


THREADS = re.compile(r"(?:^|\s)--threads(?:=|\s+)([0-9]+)(?=\s|$)")


def web_threads(command: str | None) -> int:
    """Threads per web process (gunicorn's --threads; 1 without): chirp holds a connection per thread."""
    found = THREADS.search(command or "")
    return max(1, int(found.group(1))) if found else 1


def web_command(inv: Inventory, source: AppSource) -> str | None:
    """The command serving the app: services.app.command, else the Procfile's `web`."""
    return inv.services.app.command or source.processes.get("web")


def fill(command: str | None, host: Host, inv: Inventory) -> str | None:
    """The command as written into a unit's ExecStart= (placeholders filled, systemd's '%' escaped)."""
    if command is None:
        return None
    svc = inv.services.app
    for key, value in (("address", host.mesh_address), ("port", svc.port), ("workers", svc.workers)):
        command = command.replace("{" + key + "}", str(value))
    return command.replace("%", "%%")


def app_config(ctx: ConfigContext, host: Host, source: AppSource | None = None) -> AppHostConfig:
    """`source` lets a caller read the app's directory once for every host (default: read it now)."""
    if not (host.has("app") or host.has("worker")):
        raise ValueError(f"{host.name} has neither the app nor the worker role")
    inv, svc = ctx.inv, ctx.inv.services.app
    src = source or ctx.shared("app-source", lambda: app_source(inv))
    web = web_command(inv, src)
    if host.has("app") and web is None:
        raise AppSourceError(
            f"{src.directory}: no command serves the app: set services.app.command or add a "
            "`web:` line to the app's Procfile"
        )
    if host.has("worker") and "worker" not in src.processes:
        raise AppSourceError(
            f"{src.directory}: {host.name} has the worker role but the app's Procfile has no `worker:` line"
        )
    db_host, db_port = db_endpoint(ctx, host)
    cache = cache_plan(ctx.placement)
    return AppHostConfig(
        host=host.name,
        mesh_address=host.mesh_address,
        runs_web=host.has("app"),
        runs_worker=host.has("worker"),
        name=src.name,
        user=src.name,
        source=src,
        install_dir=f"/opt/{src.name}/app",
        env_path=f"/etc/{src.name}/{src.name}.env",
        env_prefix=src.name.upper().replace("-", "_") + "_",
        release=release_id(src, web, inv),
        port=svc.port,
        health=svc.health,
        workers=svc.workers,
        web_command=fill(web, host, inv) if host.has("app") else None,
        worker_command=fill(src.processes.get("worker"), host, inv) if host.has("worker") else None,
        release_command=fill(src.processes.get("release"), host, inv) if host.has("app") else None,
        db_host=db_host,
        db_port=db_port,
        db_name=APP_DATABASE,
        db_session_name=SESSION_DATABASE,
        db_user=APP_USER,
        db_password=ctx.secret(APP_PASSWORD),
        db_password_previous=ctx.previous(APP_PASSWORD),
        sentinels=tuple(
            f"{inv.host(m.name).mesh_address}:{cache.sentinel_port}"
            for m in sorted(cache.sentinels, key=lambda m: natural_key(m.name))
        ),
        redis_master=ctx.placement.name,
        cache_password=ctx.secret(CACHE_PASSWORD),
        secret_key=ctx.secret(SECRET_KEY),
    )
