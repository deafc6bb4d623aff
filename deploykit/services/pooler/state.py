"""PgBouncer on a db host: Debian's pgbouncer package and unit, our pgbouncer.ini, auth file, unit drop-in and the
Patroni role-change hook.

Debian's pgbouncer.service (1.18.0-1+deb12u1): Type=notify, User=postgres, ExecStart=/usr/sbin/pgbouncer
/etc/pgbouncer/pgbouncer.ini, ExecReload=kill -HUP, KillSignal=SIGINT (a safe shutdown), no LimitNOFILE (so
systemd's 1024) and no Restart=; the package enables it (its pgbouncer.socket is left disabled, and so it
stays; /etc/default/pgbouncer only serves the SysV script). Its install starts nothing here (policy-rc.d while
deploykit installs).

Reload or restart: a change of pgbouncer.ini or of the auth file is reloaded (SIGHUP: clients stay connected;
pools, limits, timeouts and passwords apply at once, a changed database definition as its server connections
are released). What PgBouncer reads only at start (listen_addr, listen_port, unix_socket_dir) is named in the
unit's drop-in too, and a change of the drop-in restarts PgBouncer (its after_change: LimitNOFILE needs a
restart as well). The phase goes one host at a time, the primary's last (config.rollout_order).

PgBouncer 1.18 has no command that checks a configuration file, so none is checked before it replaces the live
one (a file it cannot parse on a reload is logged and the running configuration kept).
"""

from __future__ import annotations

from deploykit.plan.desired import ManagedFile, RoleState, Unit, Wait
from deploykit.services.pooler.config import NAME, PoolerHostConfig
from deploykit.services.render import render

PACKAGES = ("pgbouncer",)
UNIT = "pgbouncer"
DROPIN = f"/etc/systemd/system/{UNIT}.service.d/deploykit.conf"


def userlist_field(value: str) -> str:
    """A field of PgBouncer's auth file: in double quotes, a double quote doubled."""
    return '"' + value.replace('"', '""') + '"'


def restart_command() -> str:
    """After a change of the drop-in: systemd reads it, then a running PgBouncer restarts with it (a stopped one
    starts with it later)."""
    return f"systemctl daemon-reload && systemctl try-restart {UNIT}.service"


def ready_command(cfg: PoolerHostConfig) -> str:
    """PgBouncer answers on the mesh address (a login request is an answer: pg_isready sends no password) and
    its admin console on the unix socket."""
    return (f"pg_isready -q -h {cfg.mesh_address} -p {cfg.port} -d {cfg.pools[0].name} -U {cfg.app_user} && "
            f"runuser -u postgres -- {cfg.console} -Atq -c 'SHOW VERSION' >/dev/null")


def desired(cfg: PoolerHostConfig) -> RoleState:
    userlist = render("pooler/userlist.txt.j2", user=userlist_field(cfg.app_user),
                      password=userlist_field(cfg.app_password.reveal()))
    return RoleState(
        role=NAME,
        packages=PACKAGES,
        files=(
            # Debian's ownership and mode for both (its postinst's): PgBouncer runs as postgres.
            ManagedFile(cfg.config_path, render("pooler/pgbouncer.ini.j2", cfg=cfg), mode="0640",
                        owner="postgres", group="postgres", notify=(UNIT,)),
            ManagedFile(cfg.auth_file, userlist, mode="0640", owner="postgres", group="postgres", notify=(UNIT,)),
            ManagedFile(DROPIN, render("pooler/pgbouncer.conf.j2", cfg=cfg), after_change=restart_command()),
            # Run by Patroni (as postgres) when this member is promoted or demoted: db's on_role_change.
            ManagedFile(cfg.role_change_hook, render("pooler/reconnect.sh.j2", cfg=cfg), mode="0755"),
        ),
        services=(Unit(UNIT, enabled=True, running=True, reload=True),),
        waits=(Wait(f"PgBouncer on {cfg.name} answers on {cfg.mesh_address}:{cfg.port} and on its console",
                    ready_command(cfg), timeout_s=60),),
        rollout_order=cfg.rollout_order,
    )
