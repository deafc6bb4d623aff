"""What pgBackRest needs on a PostgreSQL member and on a repository host (see config.py for who is which)."""

from __future__ import annotations

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.services.backup.config import (
    AUTHORIZED_KEYS,
    CIPHER_TYPE,
    CONFIG_PATH,
    KEY_FILE,
    KNOWN_HOSTS,
    LOGS,
    POSTGRES_HOME,
    SPOOL,
    SSH_DIR,
    SSH_WRAPPER,
    BackupHostConfig,
    OwnRepository,
    pgbackrest,
)
from deploykit.services.db.config import PG_VERSION
from deploykit.services.db.state import no_debian_cluster
from deploykit.services.render import render

PACKAGES = ("pgbackrest",)
# A repository host also has PostgreSQL's binaries: a restore drill (`deploykit restore --into`) starts the
# restored copy there, beside the repository, without touching the cluster.
REPOSITORY_PACKAGES = ("pgbackrest", f"postgresql-{PG_VERSION}")
KINDS = ("full", "diff")
VALIDATE_CALENDAR = "systemd-analyze calendar \"$(sed -n 's/^OnCalendar=//p' {path})\" >/dev/null"


def timer_name(kind: str) -> str:
    return f"deploykit-backup-{kind}"


TIMERS = tuple(f"{timer_name(k)}.timer" for k in KINDS)


def own_key_command() -> str:
    """The key was made as root before postgres existed (the probe's fact); pgBackRest runs as postgres."""
    return f"chown -R postgres:postgres {SSH_DIR} && chmod 0700 {SSH_DIR} && chmod 0600 {KEY_FILE}"


def stanza_create(cfg: BackupHostConfig) -> str:
    """Creates the stanza in this host's repository, or checks that the one there is this cluster's."""
    return pgbackrest(cfg.stanza, "--log-level-console=info", "stanza-create")


def schedule(cfg: BackupHostConfig, repo: OwnRepository) -> tuple[ManagedFile, ...]:
    out = []
    for kind, calendar in (("full", repo.full), ("diff", repo.diff)):
        command = f"/usr/bin/pgbackrest --stanza={cfg.stanza} --repo={repo.index} --type={kind} backup"
        params = {"name": cfg.name, "kind": kind, "stanza": cfg.stanza, "index": repo.index}
        out.append(ManagedFile(f"/etc/systemd/system/{timer_name(kind)}.service",
                               render("backup/backup.service.j2", command=command, **params)))
        # systemd's own parser checks the schedule before the timer is replaced (an inventory typo fails here).
        out.append(ManagedFile(f"/etc/systemd/system/{timer_name(kind)}.timer",
                               render("backup/backup.timer.j2", calendar=calendar, **params),
                               validate=VALIDATE_CALENDAR))
    return tuple(out)


def desired(cfg: BackupHostConfig) -> RoleState:
    repo = cfg.repository
    conf = render("backup/pgbackrest.conf.j2", cfg=cfg, wrapper=SSH_WRAPPER, logs=LOGS, spool=SPOOL,
                  cipher_type=CIPHER_TYPE, cipher_pass=repo.cipher_pass.reveal() if repo else "")
    files = [
        *((no_debian_cluster(),) if repo is not None else ()),
        # Its key line changes with the key (a wiped host makes a new one): the key is handed to postgres then.
        ManagedFile(SSH_WRAPPER, render("backup/pgbackrest-ssh.j2", name=cfg.name, own_key=cfg.own_key or "-",
                                        key_file=KEY_FILE, known_hosts=KNOWN_HOSTS),
                    mode="0755", after_change=own_key_command()),
        ManagedFile(KNOWN_HOSTS, render("backup/known_hosts.j2", name=cfg.name, peers=cfg.known),
                    owner="postgres", group="postgres"),
        ManagedFile(AUTHORIZED_KEYS, render("backup/authorized_keys.j2", name=cfg.name, peers=cfg.authorized),
                    mode="0600", owner="postgres", group="postgres"),
        ManagedFile(CONFIG_PATH, conf, mode="0640", owner="root", group="postgres",
                    after_change=stanza_create(cfg) if repo is not None else None),
    ]
    units: tuple[Unit, ...]
    waits: tuple[Wait, ...] = ()
    if repo is not None:
        files += schedule(cfg, repo)
        units = tuple(Unit(t, enabled=True, running=True) for t in TIMERS)
        # The whole chain: a WAL switch on the primary, archived by its pgBackRest into this repository.
        waits = (Wait(f"WAL from the primary reaches repository {repo.index} on {cfg.name}",
                      pgbackrest(cfg.stanza, "--archive-timeout=30", "check"),
                      timeout_s=180),)
    else:
        # A former repository host keeps no schedule.
        units = tuple(Unit(t, enabled=False, running=False) for t in TIMERS)
    return RoleState(
        role="backup",
        packages=REPOSITORY_PACKAGES if repo is not None else PACKAGES,
        directories=(
            Directory("/etc/pgbackrest", mode="0755"),
            Directory(f"{POSTGRES_HOME}/.ssh", mode="0700", owner="postgres", group="postgres"),
        ),
        files=tuple(files),
        services=units,
        waits=waits,
        # Members first (their authorized keys let the repositories in), then the repository hosts, whose
        # stanza-create and check reach the members.
        rollout_order=1 if repo is not None else 0,
    )
