"""Where the pgBackRest repositories are (every host with the backup role, one repository each) and which
PostgreSQL members they back up. A repository's number (pgBackRest's `repoN`) is its place among the backup
hosts in natural name order: the same number on every host, as pgBackRest's remote protocol requires (a
remote repository host is asked for `--repo=N` and reads its own `repoN-*` options)."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from deploykit.inventory.model import Inventory
from deploykit.plan.placement import Placement

NAME = "backup"
REPO_PATH = "/var/lib/pgbackrest"  # Debian's pgbackrest package makes it, owned by postgres
MAX_REPOSITORIES = 256  # pgBackRest's repo1 .. repo256


@dataclass(frozen=True, slots=True)
class Repository:
    index: int  # repoN
    host: str
    mesh_address: IPv4Address
    site: str
    provider: str
    db_host: bool  # the repository host is also a PostgreSQL member
    ssh_port: int  # pgBackRest reaches it over SSH, on its mesh address


@dataclass(frozen=True, slots=True)
class PgMember:
    host: str
    mesh_address: IPv4Address
    ssh_port: int


@dataclass(frozen=True, slots=True)
class BackupPlan:
    stanza: str  # Patroni's scope: one stanza per database cluster
    repositories: tuple[Repository, ...]
    members: tuple[PgMember, ...]

    def repository(self, host: str) -> Repository | None:
        return next((r for r in self.repositories if r.host == host), None)


def plan_backup(inv: Inventory) -> BackupPlan:
    dbs = {h.name for h in inv.with_role("db")}
    repos = tuple(Repository(i, h.name, h.mesh_address, h.site, h.provider, h.name in dbs, h.ssh.port)
                  for i, h in enumerate(inv.with_role(NAME), start=1))
    members = tuple(PgMember(h.name, h.mesh_address, h.ssh.port) for h in inv.with_role("db"))
    return BackupPlan(inv.name, repos, members)


def backup_plan(p: Placement) -> BackupPlan:
    return p.part(NAME, BackupPlan)
