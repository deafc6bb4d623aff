"""A PostgreSQL 15 member managed by Patroni, which holds its leader lock in etcd."""

from __future__ import annotations

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.db.config import PG_VERSION, DbHostConfig
from deploykit.services.render import render

DYNAMIC_CONFIG = "/etc/patroni/dynamic.yml"
DROPIN = "/etc/systemd/system/patroni.service.d/deploykit.conf"
ROLES_SQL = "/etc/patroni/roles.sql"
POST_INIT = "/etc/patroni/post_init.sh"
DEBIAN_CLUSTER = f"postgresql@{PG_VERSION}-main"
PACKAGES = (f"postgresql-{PG_VERSION}", "patroni", "python3-etcd", "curl")

# The YAML is checked for syntax only. `patroni --validate-config` (3.0.2) is no use on a live member: it
# rejects the file when the REST API or PostgreSQL port is already in use (i.e. whenever Patroni runs) or
# when an etcd endpoint is unreachable, and it requires keys deploykit does not use (a rewind user).
VALIDATE_YAML = "python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' {path}"


def drop_debian_cluster() -> str:
    """Installing postgresql-15 creates and starts Debian's default cluster 15/main on port 5432, where
    Patroni's member must listen. It holds nothing (a fresh initdb), so it is stopped and removed, once:
    `create_main_cluster = false` keeps a reinstall from creating it again. Patroni's own cluster is not a
    pg_createcluster cluster (no /etc/postgresql/15/<name>), so this never touches it."""
    main = f"/etc/postgresql/{PG_VERSION}/main"
    return f"if [ -d {main} ]; then pg_dropcluster --stop {PG_VERSION} main; fi"


def no_debian_cluster() -> ManagedFile:
    """createcluster.d's setting, in place before postgresql-15 is installed: its install then never creates
    Debian's cluster (any role that installs postgresql-15 writes it: db, and backup for its restore drills)."""
    return ManagedFile(
        "/etc/postgresql-common/createcluster.d/60-deploykit.conf",
        render("db/createcluster.conf.j2"),
        before_install=True,
        after_change=drop_debian_cluster(),
    )


def apply_dynamic_config(cfg: DbHostConfig) -> str:
    """Patroni reads bootstrap.dcs only when it initialises the cluster; afterwards the cluster-wide settings
    live in etcd. This pushes the changed file there. Before the cluster exists (the first deploy: Patroni
    not started yet) there is nothing to edit and bootstrap.dcs applies instead."""
    ctl = f"patronictl -c {cfg.config_path}"
    return (
        f"if {ctl} show-config >/dev/null 2>&1; then {ctl} edit-config --force --quiet --apply {DYNAMIC_CONFIG};"
        " else echo 'cluster not initialised yet: bootstrap.dcs applies'; fi"
    )


def alter_roles_command(cfg: DbHostConfig) -> str:
    """On the leader only (asked of its own REST API): apply ROLES_SQL. Before the cluster exists nobody leads
    and the bootstrap sets the passwords instead."""
    return (f"if curl -fsS -o /dev/null http://{cfg.rest_listen}/primary; then "
            f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p {cfg.port} -d postgres -f {ROLES_SQL}; "
            f"else echo 'not the leader: the leader applies {ROLES_SQL}'; fi")


def leader_command(cfg: DbHostConfig) -> str:
    check = (
        "import json, sys; members = json.load(sys.stdin); "
        "sys.exit(0 if any(m['Role'] == 'Leader' and m['State'] == 'running' for m in members) else 1)"
    )
    return f'patronictl -c {cfg.config_path} list -f json | python3 -c "{check}"'


def watchdog_files(cfg: DbHostConfig) -> tuple[ManagedFile, ...]:
    if not cfg.watchdog:
        return ()
    return (
        ManagedFile(
            "/etc/modules-load.d/deploykit-watchdog.conf",
            render("db/watchdog.modules.j2"),
            after_change="modprobe softdog",
        ),
        ManagedFile(
            "/etc/udev/rules.d/60-deploykit-watchdog.rules",
            render("db/watchdog.rules.j2"),
            after_change="udevadm control --reload && udevadm trigger --sysname-match=watchdog*",
        ),
    )


def desired(cfg: DbHostConfig) -> RoleState:
    config = render(
        "db/config.yml.j2",
        cfg=cfg,
        dcs=cfg.dcs,
        rest_password=cfg.rest_password.reveal(),
        superuser_password=cfg.superuser_password.reveal(),
        replication_password=cfg.replication_password.reveal(),
    )
    post_init = render(
        "db/post_init.sh.j2",
        app_user=cfg.app_user,
        app_database=cfg.app_database,
        app_password=cfg.app_password.reveal(),
    )
    files = (
        no_debian_cluster(),
        *watchdog_files(cfg),
        ManagedFile(POST_INIT, post_init, mode="0700", owner="postgres", group="postgres"),
        # Ordering only: systemd reads it at daemon-reload, nothing restarts.
        ManagedFile(DROPIN, render("db/patroni-dropin.conf.j2", cfg=cfg)),
        # Before config.yml, which names it (Patroni reloads that one).
        ManagedFile(cfg.on_role_change, render("db/on_role_change.sh.j2", hooks=cfg.role_change_hooks),
                    mode="0755"),
        # Patroni is reloaded (SIGHUP), not restarted, on a change: a restart stops PostgreSQL, and on the
        # primary that is a failover (seen in the lab: every member restarted in turn moved the leader
        # twice). A reload applies pg_hba, parameters, tags, REST API and credentials in place; a setting
        # that needs a PostgreSQL restart (the port) shows as "pending restart" in `patronictl list`, for a
        # rolling `patronictl restart`.
        ManagedFile(
            cfg.config_path,
            config,
            mode="0600",
            owner="postgres",
            group="postgres",
            validate=VALIDATE_YAML,
            notify=("patroni",),
        ),
        # The roles' passwords, applied on the leader when they change (before Patroni reloads config.yml).
        ManagedFile(
            ROLES_SQL,
            render("db/roles.sql.j2", roles=(
                (cfg.superuser, cfg.superuser_password.reveal()),
                (cfg.replication_user, cfg.replication_password.reveal()),
                (cfg.app_user, cfg.app_password.reveal()),
            )),
            mode="0600",
            owner="postgres",
            group="postgres",
            after_change=alter_roles_command(cfg),
        ),
        # Written after config.yml: this file's after_change runs patronictl, which reads config.yml.
        ManagedFile(
            DYNAMIC_CONFIG,
            render("db/dynamic.yml.j2", name=cfg.name, dcs=cfg.dcs),
            validate=VALIDATE_YAML,
            after_change=apply_dynamic_config(cfg),
        ),
    )
    return RoleState(
        role="db",
        # The leader first, then the replicas (a rotated replication password is the leader's before the
        # replicas reconnect with it).
        rollout_order=cfg.rollout_order,
        packages=PACKAGES,
        directories=(Directory(f"/var/lib/postgresql/{PG_VERSION}", mode="0755", owner="postgres", group="postgres"),
                     Directory(cfg.role_change_hooks)),
        files=files,
        services=(Unit("patroni", enabled=True, running=True, reload=True),),
        masked=(DEBIAN_CLUSTER,),
        waits=(
            # /health answers 200 once PostgreSQL runs here (primary or streaming standby); no auth for GET.
            Wait(
                f"patroni on {cfg.name} healthy",
                f"curl -fsS -o /dev/null http://{cfg.rest_listen}/health",
                timeout_s=300,
            ),
            Wait(f"cluster {cfg.scope} has a leader", leader_command(cfg), timeout_s=120),
        ),
    )
