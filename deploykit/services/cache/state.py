"""Redis and Sentinel on every cache host (Debian's redis-server, redis-sentinel and redis-tools).

Redis and Sentinel rewrite their own config files at run time: a failover makes Sentinel send `REPLICAOF` +
`CONFIG REWRITE` to the servers, and every Sentinel persists what it learns (replicas, other sentinels,
epochs, the current master) into sentinel.conf. Re-applying must neither undo a failover nor report a change,
so the files are split by who owns them:

- /etc/redis/deploykit.conf: every static Redis setting, fully managed. Redis reads it through `include`
  and never writes it. A change restarts redis-server.
- /etc/redis/redis.conf and /etc/redis/sentinel.conf: seeds (`ManagedFile.seed`), written only when absent
  or when the seed itself changed; from the first start the service owns their content.

CONFIG REWRITE copies every non-default setting, the included ones too, into redis.conf after the
`include` line (checked with redis-server 7.0.15), so those copies would override a later change of
deploykit.conf. When deploykit.conf changes, its `after_change` therefore strips redis.conf back to its
`include` and `replicaof` lines (the latter being the failover state) before Redis restarts.

Sentinel's settings cannot move to an include: every state change re-emits all `sentinel` lines (tunables
included) into sentinel.conf after any include, so the copies would win, and stripping them would also strip
what Sentinel learned. So sentinel.conf stays one seed. A changed
seed (password, down_after_ms, quorum, membership) replaces what Sentinel learned: after a failover that
points the sentinels back at the initial master, now a replica, and they cannot fail over from it. On a live
cluster such a re-seed needs a deliberate step (failover back first, or a confirmed reseed).
"""

from __future__ import annotations

import re

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.cache.config import CacheHostConfig
from deploykit.services.render import render

REDIS_CONF = "/etc/redis/redis.conf"
STATIC_CONF = "/etc/redis/deploykit.conf"
SENTINEL_CONF = "/etc/redis/sentinel.conf"
# The password for redis-cli on the host (waits, operators), so it never appears in a command line:
# `REDISCLI_AUTH="$(cat ...)" redis-cli ...` keeps it out of argv and out of the plan's commands.
CLI_AUTH = "/etc/redis/deploykit.auth"
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
    """A file the service rewrites at run time. Owned by redis: the service replaces it (a temporary file in
    /etc/redis renamed over it, keeping the mode), so it is redis-owned after the first rewrite anyway.
    0640: it holds the password."""
    return ManagedFile(path, content, mode="0640", owner="redis", group="redis", seed=True, notify=(service,))


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
    }
    files = (
        seed_file(REDIS_CONF, render("cache/redis.conf.j2", **ctx), "redis-server"),
        ManagedFile(
            STATIC_CONF,
            render("cache/deploykit.conf.j2", **ctx),
            mode="0640",
            group="redis",
            after_change=STRIP_REWRITE_COPIES,
            # Restarting the current master makes the sentinels fail over if it is down longer than
            # down_after_ms; the executor restarts the replicas first (see the report to the lead).
            notify=("redis-server",),
        ),
        seed_file(SENTINEL_CONF, render("cache/sentinel.conf.j2", **ctx), "redis-sentinel"),
        ManagedFile(CLI_AUTH, cfg.password.reveal() + "\n", mode="0600"),
    )
    return RoleState(
        role="cache",
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
