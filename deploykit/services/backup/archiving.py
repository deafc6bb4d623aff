"""What PostgreSQL and Patroni are told about the backups (read by the db service for its dynamic config and
config.yml): WAL archiving from whichever member is primary, WAL fetched back from the repositories, and new
replicas built from a backup.

`archive_mode` is on in every cluster, with or without repositories: it needs a PostgreSQL restart to change,
while `archive_command` does not. Without repositories the command archives nothing (`/bin/true`), so adding
backup hosts later changes a reloadable setting only.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.inventory.model import Inventory

NAME = "backup"
PGBACKREST = "/usr/bin/pgbackrest"
NO_ARCHIVE = "/bin/true"


@dataclass(frozen=True, slots=True)
class WalArchiving:
    archive_command: str
    archive_timeout: int  # seconds: a segment at least this often, even when idle (the RPO bound)
    restore_command: str | None  # for standbys; None: they stream only (see wal_archiving)
    # Patroni's create_replica_methods: from a backup first (offloads the primary), else pg_basebackup.
    replica_methods: tuple[str, ...]
    replica_command: str | None  # the pgbackrest method's command


def wal_archiving(inv: Inventory) -> WalArchiving:
    stanza = f"{PGBACKREST} --stanza={inv.name}"
    if not inv.with_role(NAME):
        return WalArchiving(NO_ARCHIVE, inv.services.backup.archive_timeout, None, ("basebackup",), None)
    return WalArchiving(
        archive_command=f"{stanza} archive-push %p",
        archive_timeout=inv.services.backup.archive_timeout,
        # Standbys stream from the primary only, never from the archive: after a failover the archive can hold
        # WAL of the old timeline past the point where the new primary forked (segments the old primary
        # archived that no standby had received), and a standby that replayed it could not follow the new
        # primary any more (seen on the lab: both replicas stuck at a constant lag after a failover).
        restore_command=None,
        replica_methods=("pgbackrest", "basebackup"),
        # --delta reuses what a member's data directory still holds; Patroni then makes it a standby.
        replica_command=f"{stanza} --delta restore",
    )
