"""Redis and Sentinel on every cache host (Debian's redis-server, redis-sentinel and redis-tools).

Redis and Sentinel rewrite their own config files at run time: a failover makes Sentinel send `REPLICAOF` +
`CONFIG REWRITE` to the servers, and every Sentinel persists what it learns (replicas, other sentinels,
epochs, the current master) into sentinel.conf. Re-applying must neither undo a failover nor report a change,
so the files are split by who owns them:

- /etc/redis/deploykit.conf: every static Redis setting, fully managed. Redis reads it through `include`
  and never writes it. A change restarts redis-server, the master last and only after a failover moved the
  master away (sentinel.py).
- /etc/redis/redis.conf and /etc/redis/sentinel.conf: seeds (`ManagedFile.seed`), written only when absent,
  pointing at the current master as the sentinels report it; from the first start the service owns them.
- /etc/deploykit/cache-sentinel: the sentinels' settings and the group's members; a change is applied to the
  running sentinel with SENTINEL SET / SENTINEL RESET (sentinel.py), never by re-seeding.

CONFIG REWRITE copies every non-default setting, the included ones too, into redis.conf after the
`include` line (checked with redis-server 7.0.15), so those copies would override a later change of
deploykit.conf. When deploykit.conf changes, its `after_change` therefore strips redis.conf back to its
`include` and `replicaof` lines (the latter being the failover state) before Redis restarts.
"""

from __future__ import annotations

import hashlib
import re

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.cache.config import CacheHostConfig
from deploykit.services.cache.sentinel import (
    ACL_FILE,
    AUTH_CONF,
    CLI_AUTH,
    LOGIN,
    PREVIOUS_AUTH,
    SETTINGS_FILE,
    auth_script,
    failover_script,
    login_script,
    sync_script,
)
from deploykit.services.render import render

REDIS_CONF = "/etc/redis/redis.conf"
STATIC_CONF = "/etc/redis/deploykit.conf"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
# CLI_AUTH: the password for redis-cli on the host (waits, operators, sentinel.py), so it never appears in a
# command line: `REDISCLI_AUTH="$(cat ...)" redis-cli ...` keeps it out of argv and out of the plan's commands.
PACKAGES = ("redis-server", "redis-sentinel", "redis-tools")
SAFE_PASSWORD = re.compile(r"[A-Za-z0-9._~+/=-]+")

# Keep the lines Redis needs from us (the include) and the failover state (replicaof); drop the copies of
# included settings a CONFIG REWRITE appended. GNU sed -i keeps the file's owner and mode.
STRIP_REWRITE_COPIES = f"if [ -f {REDIS_CONF} ]; then sed -i -E '/^(include|replicaof) /!{{/^#/!d}}' {REDIS_CONF}; fi"


def redis_password(value: str) -> str:
    """The password as written into the config files, unquoted.

    Sentinel writes `auth-pass` and `sentinel-pass` back unquoted when it rewrites sentinel.conf, and then
    cannot read a value with a quote or a space again ("Unbalanced quotes", checked with redis-sentinel
    7.0.15): only a password that needs no quoting survives a rewrite, so any other is refused here.
    """
    if not SAFE_PASSWORD.fullmatch(value):
        raise ValueError("the cache password must consist of letters, digits and . _ ~ + / = - only")
    return value


def redis_cli(port: int, *args: str) -> str:
    return f'REDISCLI_AUTH="$(cat {CLI_AUTH})" redis-cli -h 127.0.0.1 -p {port} ' + " ".join(args)


def seed_file(path: str, content: str, service: str) -> ManagedFile:
    """A file the service rewrites at run time, written only when absent. Owned by redis: the service replaces
    it (a temporary file in /etc/redis renamed over it, keeping the mode), so it is redis-owned after the first
    rewrite anyway. 0640: it holds the password."""
    return ManagedFile(path, content, mode="0640", owner="redis", group="redis", seed=True, notify=(service,))


def sentinel_id(group: str, host: str) -> str:
    """A sentinel's run id (40 hex digits), derived from the group and the host: stable across re-seeds."""
    return hashlib.sha1(f"deploykit sentinel {group} {host}".encode()).hexdigest()


def settings_record(cfg: CacheHostConfig) -> str:
    """What the running sentinels must hold (applied by sync_script when it changes)."""
    lines = [f"# Managed by deploykit: the Redis group {cfg.master_name}'s sentinel settings and members.",
             "# A change is applied to the running sentinel (SENTINEL SET / RESET), never by re-seeding.",
             *(f"{k} {v}" for k, v in cfg.settings), *(f"member {a}" for a in cfg.members),
             "passwords " + " ".join(cfg.password_hashes)]
    return "\n".join(lines) + "\n"


def desired(cfg: CacheHostConfig) -> RoleState:
    ctx = {
        "host": cfg.host,
        "mesh_address": cfg.mesh_address,
        "port": cfg.port,
        "sentinel_port": cfg.sentinel_port,
        "replicaof": cfg.replicaof,
        "master_name": cfg.master_name,
        "master_address": cfg.master_address,
        "quorum": cfg.quorum,
        "down_after_ms": cfg.down_after_ms,
        "failover_timeout_ms": cfg.failover_timeout_ms,
        "parallel_syncs": cfg.parallel_syncs,
        "password": redis_password(cfg.password.reveal()),
        # what the group authenticates to itself with: the previous password while a rotation is under way
        "using_password": redis_password((cfg.previous_password or cfg.password).reveal()),
        "sentinel_id": sentinel_id(cfg.master_name, cfg.host),
        "auth_conf": AUTH_CONF,
        "acl_file": ACL_FILE,
        "hashes": cfg.password_hashes,
    }
    files = (
        seed_file(REDIS_CONF, render("cache/redis.conf.j2", **ctx), "redis-server"),
        ManagedFile(LOGIN, login_script(), mode="0755"),
        ManagedFile(CLI_AUTH, cfg.password.reveal() + "\n", mode="0600"),
        # The password before an unfinished rotation (empty: none), for the scripts to get in with while the
        # server does not take the new one yet.
        ManagedFile(PREVIOUS_AUTH, (cfg.previous_password.reveal() + "\n") if cfg.previous_password else "",
                    mode="0600"),
        ManagedFile(ACL_FILE, f"user default on {' '.join('#' + h for h in cfg.password_hashes)} ~* &* +@all\n",
                    mode="0640", group="redis"),
        ManagedFile(AUTH_CONF, render("cache/auth.conf.j2", **ctx), mode="0640", group="redis",
                    after_change=f"(\n{auth_script(cfg.port, cfg.password_hashes)}) || exit 1\n"
                                 + STRIP_REWRITE_COPIES),
        ManagedFile(
            STATIC_CONF,
            render("cache/deploykit.conf.j2", **ctx),
            mode="0640",
            group="redis",
            # The restart that follows goes replicas first (the master's rollout_order is last); the master
            # hands its role to a replica before (a planned failover, not a detected one), then strips the
            # copies the failover's CONFIG REWRITE appended.
            after_change=f"(\n{failover_script(cfg.port, cfg.sentinel_port, cfg.master_name)}) || exit 1\n"
                         + STRIP_REWRITE_COPIES,
            notify=("redis-server",),
        ),
        seed_file(SENTINEL_CONF, render("cache/sentinel.conf.j2", **ctx), "redis-sentinel"),
        ManagedFile(
            SETTINGS_FILE,
            settings_record(cfg),
            after_change=sync_script(cfg.sentinel_port, cfg.master_name, cfg.settings, cfg.members, cfg.quorum,
                                     cfg.password_hashes),
        ),
    )
    return RoleState(
        role="cache",
        # A running master changes last (replicas first); on the first deploy it starts first (by name).
        rollout_order=1 if cfg.is_master and cfg.master_running else 0,
        packages=PACKAGES,
        # Debian's own mode: Sentinel and CONFIG REWRITE create their temporary file next to the config.
        directories=(Directory("/etc/redis", mode="2770", owner="redis", group="redis"),),
        files=files,
        services=(Unit("redis-server"), Unit("redis-sentinel")),
        waits=(
            Wait("redis answers PING", f"{redis_cli(cfg.port, 'ping')} | grep -q PONG"),
            Wait(
                "redis is the master or a replica in sync",
                f"{redis_cli(cfg.port, 'info', 'replication')} | grep -Eq '^(role:master|master_link_status:up)'",
            ),
            Wait(
                "sentinel knows the master",
                f"{redis_cli(cfg.sentinel_port, 'sentinel', 'get-master-addr-by-name', cfg.master_name)}"
                " | grep -Eq '^[0-9]+[.]'",
            ),
        ),
    )
