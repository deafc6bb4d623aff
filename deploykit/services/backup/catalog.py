"""What the repositories hold, from pgBackRest's `info --output=json` (pure): the backups, and the time range a
point-in-time restore can reach from each repository."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime


class CatalogError(ValueError):
    """pgBackRest answered something this does not understand (said with the repository's host)."""


@dataclass(frozen=True, slots=True)
class BackupEntry:
    label: str
    kind: str  # full | diff | incr
    start: datetime
    stop: datetime
    size: int  # bytes of the database
    stored: int  # bytes in the repository (compressed, encrypted)
    wal_start: str
    wal_stop: str


@dataclass(frozen=True, slots=True)
class RepoCatalog:
    index: int
    host: str
    status: str  # pgBackRest's status message ("ok", "no valid backups", ...)
    encrypted: bool
    backups: tuple[BackupEntry, ...]
    newest_wal: datetime | None  # when the newest WAL segment reached the repository

    @property
    def recoverable(self) -> tuple[datetime, datetime] | None:
        """From the end of the oldest backup to the newest archived WAL; None: nothing to restore."""
        if not self.backups or self.newest_wal is None:
            return None
        start = min(b.stop for b in self.backups)
        return start, max(self.newest_wal, max(b.stop for b in self.backups))


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def parse_info(index: int, host: str, stanza: str, text: str, newest_wal: str) -> RepoCatalog:
    """One repository's catalog from `info --output=json` and the newest WAL's arrival (epoch s, may be '')."""
    try:
        data = json.loads(text)
        entry = next((s for s in data if s.get("name") == stanza), None)
    except (json.JSONDecodeError, TypeError, AttributeError) as exc:
        raise CatalogError(f"{host}: pgBackRest's info is not the JSON expected ({exc})") from exc
    if entry is None:
        return RepoCatalog(index, host, f"no stanza {stanza}", False, (), None)
    repos = [r for r in entry.get("repo", []) if r.get("key") == index]
    encrypted = bool(repos) and repos[0].get("cipher", "none") != "none"
    status = str((repos[0] if repos else entry).get("status", {}).get("message", "unknown"))
    backups = []
    try:
        for b in entry.get("backup", []):
            if b.get("database", {}).get("repo-key", index) != index:
                continue
            stamp, sizes, wal = b.get("timestamp", {}), b.get("info", {}), b.get("archive", {})
            backups.append(BackupEntry(str(b.get("label")), str(b.get("type")), _at(stamp["start"]),
                                       _at(stamp["stop"]), int(sizes.get("size", 0)),
                                       int(sizes.get("repository", {}).get("delta", 0)),
                                       str(wal.get("start", "")), str(wal.get("stop", ""))))
        wal_time = _at(float(newest_wal)) if newest_wal.strip() else None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise CatalogError(f"{host}: pgBackRest's info has an entry this does not understand ({exc!r})") from exc
    return RepoCatalog(index, host, status, encrypted, tuple(backups), wal_time)


def parse_target(text: str) -> datetime:
    """A restore target as the operator writes it: ISO 8601 with its zone (`2026-11-30T05:40:00Z`,
    `2026-11-30 06:40:00+01:00`). A time without a zone is refused: it would be read in some server's zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"--time {text!r} is not a time: write it as ISO 8601 with its zone, e.g. "
                         "2026-11-30T05:40:00Z") from exc
    if value.tzinfo is None:
        raise ValueError(f"--time {text!r} has no time zone: add one (Z for UTC, or e.g. +01:00) so that "
                         "it means the same on every server")
    return value.astimezone(UTC)


def pg_time(value: datetime) -> str:
    """A time as PostgreSQL's recovery_target_time reads it."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def covering(catalogs: list[RepoCatalog], target: datetime) -> RepoCatalog | None:
    """The first repository whose recoverable range holds `target`."""
    for c in catalogs:
        span = c.recoverable
        if span is not None and span[0] <= target <= span[1]:
            return c
    return None


def describe_range(c: RepoCatalog) -> str:
    span = c.recoverable
    if span is None:
        return f"repo{c.index} ({c.host}): nothing to restore ({c.status})"
    return f"repo{c.index} ({c.host}): {iso(span[0])} .. {iso(span[1])}"


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
