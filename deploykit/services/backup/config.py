"""One host's pgBackRest settings: a PostgreSQL member (WAL pushed to every repository, restores fetched
from them) and/or a repository host (its own repository, encrypted, and the members it backs up).

Transport: SSH over the WireGuard mesh, as the postgres user both ways (a repository host runs `backup` and
reaches each member's PostgreSQL; a member's `archive-push` and `restore` reach each repository). Every host
makes its own key pair (`KEY_FACT`: only the public half is read), and knows the others' host keys from their
facts (`HOST_KEY_FACT`), so nothing secret travels and no host key is trusted on first use. Why not
pgBackRest's TLS server: it would need a certificate authority for the database tier, a daemon on every
host and a port opened on the mesh; SSH needs none of that and sshd is already there (docs/backups.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.inventory.model import Host
from deploykit.secret import Secret
from deploykit.services.backup.archiving import PGBACKREST
from deploykit.services.backup.placement import REPO_PATH, BackupPlan, Repository, backup_plan
from deploykit.services.contract import ConfigContext, HostFact
from deploykit.services.db.config import PG_VERSION
from deploykit.services.db.placement import db_plan

CONFIG_PATH = "/etc/pgbackrest/pgbackrest.conf"
SSH_DIR = "/etc/pgbackrest/ssh"
KEY_FILE = f"{SSH_DIR}/id_ed25519"
KNOWN_HOSTS = f"{SSH_DIR}/known_hosts"
SSH_WRAPPER = "/usr/local/lib/deploykit/pgbackrest-ssh"
POSTGRES_HOME = "/var/lib/postgresql"
AUTHORIZED_KEYS = f"{POSTGRES_HOME}/.ssh/authorized_keys"
SPOOL = "/var/spool/pgbackrest"
LOGS = "/var/log/pgbackrest"
CIPHER_TYPE = "aes-256-cbc"
CIPHER_SECRET = "backup-cipher-{host}"  # one key per repository, named by its host (numbers may shift)
SECRETS = ("backup-cipher-*",)

# The host's public key for pgBackRest's SSH (made on the host, as root, before any package is there:
# ssh-keygen comes with the sshd every server runs). Ownership passes to postgres once it exists (state.py).
KEY_FACT = "backup-ssh-key"
READ_KEY = f"if [ -s {KEY_FILE}.pub ]; then cat {KEY_FILE}.pub; fi"
# An empty key file (an interrupted run) is made again; a lost public half is derived from the private key.
ENSURE_KEY = (f"if [ ! -s {KEY_FILE} ]; then umask 077 && mkdir -p {SSH_DIR} && rm -f {KEY_FILE} {KEY_FILE}.pub && "
              f"ssh-keygen -q -t ed25519 -N '' -C \"pgbackrest@$(hostname)\" -f {KEY_FILE} >/dev/null </dev/null; "
              f"fi && if [ ! -s {KEY_FILE}.pub ]; then ssh-keygen -y -f {KEY_FILE} > {KEY_FILE}.pub; fi && "
              f"cat {KEY_FILE}.pub")
# The host's own SSH host key, as the others must know it (a wiped host has a new one).
HOST_KEY_FACT = "backup-host-key"
HOST_KEY_FILE = "/etc/ssh/ssh_host_ed25519_key.pub"
READ_HOST_KEY = f"if [ -s {HOST_KEY_FILE} ]; then cut -d' ' -f1,2 {HOST_KEY_FILE}; fi"
# On a primary (a moment): "<WAL segments waiting to be archived> <s since the last archived> <s since the last
# failure>" ("-": never); nothing elsewhere. Read from PostgreSQL's own view, bounded to 3 s.
ARCHIVER_FACT = "backup-archiver"
READ_ARCHIVER = (
    "for d in /var/lib/postgresql/*/*/pg_wal/archive_status; do [ -d \"$d\" ] || exit 0; "
    "n=$(ls \"$d\" | grep -c '[.]ready$'); "
    "p=$(ls -a /var/run/postgresql/ 2>/dev/null | sed -n 's/^[.]s[.]PGSQL[.]\\([0-9]*\\)$/\\1/p' | head -n 1); "
    "[ -n \"$p\" ] || exit 0; "
    "s=$(timeout 3 runuser -u postgres -- psql -XAtq -p \"$p\" -c \"select case when pg_is_in_recovery() then '' else "
    "coalesce(extract(epoch from now() - last_archived_time)::int::text, '-') || ' ' || "
    "coalesce(extract(epoch from now() - last_failed_time)::int::text, '-') end from pg_stat_archiver\" "
    "2>/dev/null) || exit 0; [ -n \"$s\" ] && echo \"$n $s\"; exit 0; done"
)
FACTS = (HostFact(KEY_FACT, READ_KEY, ENSURE_KEY), HostFact(HOST_KEY_FACT, READ_HOST_KEY),
         HostFact(ARCHIVER_FACT, READ_ARCHIVER, stored=False))
SEGMENT_MIB = 16


def archiving_problem(value: str | None, queue_max_mib: int) -> str | None:
    """What the primary's archiver fact says is wrong, or None: WAL piling up for a repository (pgBackRest
    drops it beyond archive-push-queue-max, and point-in-time recovery then has a gap), or failing pushes."""
    if not value:
        return None
    parts = value.split()
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    waiting, archived, failed = int(parts[0]) * SEGMENT_MIB, parts[1], parts[2]
    failing = failed != "-" and (archived == "-" or int(failed) < int(archived))
    if not failing and waiting < queue_max_mib // 4:
        return None
    since = f"last archived {archived} s ago" if archived != "-" else "nothing archived yet"
    return (f"WAL archiving {'is failing' if failing else 'lags'} ({since}; {waiting} MiB waiting of the "
            f"{queue_max_mib} MiB archive-push-queue-max): a repository unreachable? Beyond the queue pgBackRest "
            "drops the waiting WAL for every repository: point-in-time recovery then has a gap until the next backup")


@dataclass(frozen=True, slots=True)
class OwnRepository:
    """The repository a backup host keeps, with what only it needs: its encryption key and schedule."""

    index: int
    path: str
    cipher_pass: Secret
    retention_full: int
    retention_diff: int
    full: str  # OnCalendar
    diff: str  # OnCalendar


@dataclass(frozen=True, slots=True)
class Peer:
    """A host this one talks to over SSH: its mesh address and keys (None: not read yet)."""

    host: str
    address: str
    user_key: str | None
    host_key: str | None
    ssh_port: int = 22

    @property
    def known_as(self) -> str:
        """How known_hosts names it (a port other than 22 in brackets, as ssh looks it up)."""
        return self.address if self.ssh_port == 22 else f"[{self.address}]:{self.ssh_port}"


@dataclass(frozen=True, slots=True)
class Pg:
    """A PostgreSQL member as this host's stanza lists it (pgN: local numbering, this host first)."""

    index: int
    host: str
    address: str
    local: bool
    ssh_port: int = 22


@dataclass(frozen=True, slots=True)
class BackupHostConfig:
    name: str
    stanza: str
    member: bool  # a PostgreSQL member: pushes WAL, restores
    repository: OwnRepository | None  # a repository host: keeps this one
    repositories: tuple[Repository, ...]  # every repository (a member pushes WAL to each)
    members: tuple[Pg, ...]  # this member itself, and for a repository host every member it backs up
    data_dir: str
    port: int
    bin_dir: str
    own_key: str | None  # this host's public key (its fact)
    authorized: tuple[Peer, ...]  # whose keys may log in as postgres here
    known: tuple[Peer, ...]  # whose host keys this host trusts
    missing: tuple[str, ...]  # peers left out because their keys are not known yet
    archive_queue_max_mib: int
    process_max: int


def peers(ctx: ConfigContext, names: list[tuple[str, str, int]]) -> tuple[Peer, ...]:
    return tuple(Peer(n, a, ctx.fact(n, KEY_FACT), ctx.fact(n, HOST_KEY_FACT), port) for n, a, port in names)


def stanza_members(plan: BackupPlan, name: str, member: bool, repository: bool) -> tuple[Pg, ...]:
    """The members this host's stanza names: itself (a member: pg1, its own data directory), then, on a
    repository host, every other member over SSH. pgBackRest finds the primary among them at each backup, so a
    failover changes nothing here."""
    own = [Pg(1, name, "", True)] if member else []
    remote = [m for m in plan.members if m.host != name] if repository else []
    return (*own, *(Pg(i, m.host, str(m.mesh_address), False, m.ssh_port)
                    for i, m in enumerate(remote, start=len(own) + 1)))


def backup_config(ctx: ConfigContext, host: Host) -> BackupHostConfig:
    plan: BackupPlan = backup_plan(ctx.placement)
    db = db_plan(ctx.placement)
    svc = ctx.inv.services.backup
    member = host.has("db")
    repo = plan.repository(host.name)
    own = None
    if repo is not None:
        own = OwnRepository(repo.index, REPO_PATH, ctx.secret(CIPHER_SECRET.format(host=host.name)),
                            svc.retention_full, svc.retention_diff, svc.full, svc.diff)
    # A member talks to every repository; a repository host to every member.
    talks: dict[str, tuple[str, str, int]] = {}
    if member:
        talks.update({r.host: (r.host, str(r.mesh_address), r.ssh_port) for r in plan.repositories
                      if r.host != host.name})
    if repo is not None:
        talks.update({m.host: (m.host, str(m.mesh_address), m.ssh_port) for m in plan.members if m.host != host.name})
    others = peers(ctx, list(talks.values()))
    missing = tuple(p.host for p in others if not (p.user_key and p.host_key))
    known = tuple(p for p in others if p.user_key and p.host_key)
    return BackupHostConfig(
        name=host.name,
        stanza=plan.stanza,
        member=member,
        repository=own,
        repositories=plan.repositories,
        members=stanza_members(plan, host.name, member, repo is not None),
        data_dir=f"/var/lib/postgresql/{PG_VERSION}/{db.scope}",
        port=db.port,
        bin_dir=f"/usr/lib/postgresql/{PG_VERSION}/bin",
        own_key=ctx.fact(host.name, KEY_FACT),
        authorized=known,
        known=known,
        missing=missing,
        archive_queue_max_mib=svc.archive_queue_max_mib,
        process_max=svc.process_max,
    )


def pgbackrest(stanza: str, *args: str) -> str:
    """A pgBackRest command line as the postgres user (whose files the repository and the data are)."""
    return " ".join(("runuser -u postgres --", PGBACKREST, f"--stanza={stanza}", *args))

