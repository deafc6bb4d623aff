"""The backup commands (`deploykit backup`, `backups`, `restore`): pgBackRest's JSON read into catalogs and
recoverable ranges, the restore target as an operator writes it, the shell run on the hosts (exact strings,
quoting, `sh -n`, the small ones run for real against stand-in tools), the workflows against a fake executor
(which host got which step, in which order, what is refused before anything changes), and the CLI wiring.

The fake executor answers each host's steps from a script (substring of the step's description or command ->
(ok, output)) and records every call; its clock advances only when a step it was told about runs, so the
durations the commands print are exact.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

from deploykit import entry
from deploykit.cli import cli, main
from deploykit.errors import DeploykitError, ExitCode
from deploykit.execute import executor
from deploykit.execute.steps import HostOutcome, Shell
from deploykit.services.backup import operations, scripts
from deploykit.services.backup.catalog import (
    BackupEntry,
    CatalogError,
    RepoCatalog,
    covering,
    describe_range,
    iso,
    parse_info,
    parse_target,
    pg_time,
)
from deploykit.services.backup.operations import (
    BackupError,
    list_backups,
    restore_cluster,
    restore_drill,
    take_backup,
)

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "inventories" / "lab.yml"
STANZA = "chirp-lab"
DATA_DIR = "/var/lib/postgresql/15/chirp-lab"
MEMBERS = ["ams1-data-1", "fra1-data-1", "rbx1-data-1"]
REPO1, REPO2 = "ams1-web-2", "fra1-web-2"  # the lab's repositories: repo1, repo2
LEADER = "fra1-data-1"  # not the first member, so "the others" are not simply members[1:]
OTHERS = ["ams1-data-1", "rbx1-data-1"]
MESH = {"ams1-data-1": "10.77.226.122", "fra1-data-1": "10.77.167.178", "rbx1-data-1": "10.77.236.233"}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NOW = utc("2026-11-30T05:30:00")  # the commands' "now" in these tests (the fixtures' backups are before it)


class FrozenDatetime(datetime):
    """operations.py's datetime, its now() fixed at NOW whatever the machine's clock says."""

    @classmethod
    def now(cls, tz: Any = None) -> FrozenDatetime:
        at = NOW.astimezone(tz) if tz is not None else NOW.replace(tzinfo=None)
        return cls.fromtimestamp(at.timestamp(), tz) if tz is not None else cls.fromisoformat(at.isoformat())


# --- pgBackRest 2.45 `info --output=json`, as a repository host answers it ------------------------------------
# repo1 (ams1-web-2): a full backup on 2026-11-28 and a differential one on 2026-11-29, encrypted.

REPO1_INFO = """[
  {
    "archive": [
      {
        "database": {"id": 1, "repo-key": 1},
        "id": "15-1",
        "max": "00000001000000000000002A",
        "min": "000000010000000000000003"
      }
    ],
    "backup": [
      {
        "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
        "backrest": {"format": 5, "version": "2.45"},
        "database": {"id": 1, "repo-key": 1},
        "error": false,
        "info": {
          "delta": 31457280,
          "repository": {"delta": 4194304, "size": 4194304},
          "size": 31457280
        },
        "label": "20261128-010002F",
        "lsn": {"start": "0/3000028", "stop": "0/3000138"},
        "prior": null,
        "reference": null,
        "timestamp": {"start": 1795827602, "stop": 1795827667},
        "type": "full"
      },
      {
        "archive": {"start": "000000010000000000000021", "stop": "000000010000000000000021"},
        "backrest": {"format": 5, "version": "2.45"},
        "database": {"id": 1, "repo-key": 1},
        "error": false,
        "info": {
          "delta": 8388608,
          "repository": {"delta": 1572864, "size": 5767168},
          "size": 33554432
        },
        "label": "20261128-010002F_20261129-010003D",
        "lsn": {"start": "0/21000028", "stop": "0/21000100"},
        "prior": "20261128-010002F",
        "reference": ["20261128-010002F"],
        "timestamp": {"start": 1795914003, "stop": 1795914041},
        "type": "diff"
      }
    ],
    "cipher": "aes-256-cbc",
    "db": [{"id": 1, "repo-key": 1, "system-id": 7311023546881023415, "version": "15"}],
    "name": "chirp-lab",
    "repo": [{"cipher": "aes-256-cbc", "key": 1, "status": {"code": 0, "message": "ok"}}],
    "status": {"code": 0, "lock": {"backup": {"held": false}}, "message": "ok"}
  }
]"""
REPO1_NEWEST_WAL = "1796014770.2812740450"  # find -printf '%T@': 2026-11-30T04:59:30Z
REPO1_RANGE = (utc("2026-11-28T01:01:07"), datetime.fromtimestamp(float(REPO1_NEWEST_WAL), UTC))


def backup_json(label: str, kind: str, start: int, stop: int, size: int, stored: int, key: int,
                wal: str = "000000010000000000000025") -> dict[str, Any]:
    return {"archive": {"start": wal, "stop": wal}, "backrest": {"format": 5, "version": "2.45"},
            "database": {"id": 1, "repo-key": key}, "error": False,
            "info": {"delta": size, "repository": {"delta": stored, "size": stored}, "size": size},
            "label": label, "lsn": {"start": "0/25000028", "stop": "0/25000100"}, "prior": None, "reference": None,
            "timestamp": {"start": start, "stop": stop}, "type": kind}


def info_json(key: int, backups: list[dict[str, Any]], *, cipher: str = "aes-256-cbc",
              status: tuple[int, str] = (0, "ok"), stanza: str = STANZA) -> str:
    """Another repository's answer, built like REPO1_INFO."""
    return json.dumps([{
        "archive": [{"database": {"id": 1, "repo-key": key}, "id": "15-1", "max": "00000001000000000000002A",
                     "min": "000000010000000000000025"}] if backups else [],
        "backup": backups, "cipher": cipher,
        "db": [{"id": 1, "repo-key": key, "system-id": 7311023546881023415, "version": "15"}],
        "name": stanza,
        "repo": [{"cipher": cipher, "key": key, "status": {"code": status[0], "message": status[1]}}],
        "status": {"code": status[0], "lock": {"backup": {"held": False}}, "message": status[1]},
    }], indent=2)


# repo2 (fra1-web-2): one full backup on 2026-11-29 (so its range starts later than repo1's).
REPO2_FULL = backup_json("20261129-013001F", "full", 1795915801, 1795915870, 31457280, 4718592, key=2)
REPO2_INFO = info_json(2, [REPO2_FULL])
REPO2_NEWEST_WAL = "1796014771.0000000000"  # 2026-11-30T04:59:31Z
REPO2_RANGE = (utc("2026-11-29T01:31:10"), utc("2026-11-30T04:59:31"))


def info_answer(info: str, newest_wal: str) -> str:
    """What scripts.info prints: pgBackRest's JSON, the separator, the newest WAL's arrival."""
    return f"{info}\n{scripts.SEP}\n{newest_wal}\n"


# --- catalog: pgBackRest's answer read --------------------------------------------------------------------------

def test_a_repository_s_backups_are_read_from_pgbackrest_s_json() -> None:
    c = parse_info(1, REPO1, STANZA, REPO1_INFO, REPO1_NEWEST_WAL)
    assert (c.index, c.host, c.status, c.encrypted) == (1, REPO1, "ok", True)
    assert c.backups == (
        BackupEntry("20261128-010002F", "full", utc("2026-11-28T01:00:02"), utc("2026-11-28T01:01:07"),
                    31457280, 4194304, "000000010000000000000003", "000000010000000000000003"),
        BackupEntry("20261128-010002F_20261129-010003D", "diff", utc("2026-11-29T01:00:03"),
                    utc("2026-11-29T01:00:41"), 33554432, 1572864, "000000010000000000000021",
                    "000000010000000000000021"),
    )
    assert c.newest_wal == datetime.fromtimestamp(1796014770.281274045, UTC)
    assert iso(c.newest_wal) == "2026-11-30T04:59:30Z"


def test_the_recoverable_range_runs_from_the_oldest_backup_s_end_to_the_newest_wal() -> None:
    c = parse_info(1, REPO1, STANZA, REPO1_INFO, REPO1_NEWEST_WAL)
    assert c.recoverable == REPO1_RANGE
    assert describe_range(c) == "repo1 (ams1-web-2): 2026-11-28T01:01:07Z .. 2026-11-30T04:59:30Z"
    # the newest WAL's arrival, whatever whitespace the shell left around it
    assert parse_info(1, REPO1, STANZA, REPO1_INFO, f"\n {REPO1_NEWEST_WAL}\n").recoverable == REPO1_RANGE


def test_a_range_ends_no_earlier_than_the_newest_backup() -> None:
    # the newest WAL listed arrived before the newest backup ended (a clock step, a WAL not found): the backup
    # itself is still restorable up to its end
    c = parse_info(1, REPO1, STANZA, REPO1_INFO, "1795900000")
    assert c.recoverable == (utc("2026-11-28T01:01:07"), utc("2026-11-29T01:00:41"))


def test_a_repository_without_backups_has_nothing_to_restore() -> None:
    c = parse_info(2, REPO2, STANZA, info_json(2, [], status=(2, "no valid backups")), "")
    assert (c.status, c.backups, c.newest_wal, c.recoverable) == ("no valid backups", (), None, None)
    assert describe_range(c) == "repo2 (fra1-web-2): nothing to restore (no valid backups)"
    # WAL arrived but no backup to start from: still nothing
    assert parse_info(2, REPO2, STANZA, info_json(2, []), REPO2_NEWEST_WAL).recoverable is None


def test_backups_without_any_wal_found_have_no_range() -> None:
    assert parse_info(1, REPO1, STANZA, REPO1_INFO, "").recoverable is None
    assert parse_info(1, REPO1, STANZA, REPO1_INFO, "  \n").recoverable is None


def test_an_unknown_stanza_is_a_repository_with_nothing_in_it() -> None:
    c = parse_info(1, REPO1, "other-cluster", REPO1_INFO, REPO1_NEWEST_WAL)
    assert (c.status, c.encrypted, c.backups, c.recoverable) == ("no stanza other-cluster", False, (), None)
    assert parse_info(1, REPO1, STANZA, "[]", "").status == f"no stanza {STANZA}"


def test_only_the_stanza_asked_for_is_read_from_a_document_with_several() -> None:
    other = json.loads(info_json(1, [backup_json("20260101-000000F", "full", 1767225600, 1767225700, 1, 1, 1)],
                                 stanza="other"))
    both = json.dumps(other + json.loads(REPO1_INFO))
    c = parse_info(1, REPO1, STANZA, both, REPO1_NEWEST_WAL)
    assert [b.label for b in c.backups] == ["20261128-010002F", "20261128-010002F_20261129-010003D"]


def test_only_this_repository_s_backups_and_cipher_are_read() -> None:
    mixed = json.loads(info_json(1, [backup_json("20261130-010000F", "full", 1796000400, 1796000500, 1, 1, 1),
                                     backup_json("20261130-020000F", "full", 1796004000, 1796004100, 1, 1, 2)],
                                 cipher="none"))
    mixed[0]["repo"].append({"cipher": "aes-256-cbc", "key": 2, "status": {"code": 0, "message": "ok"}})
    text = json.dumps(mixed)
    one, two = parse_info(1, REPO1, STANZA, text, ""), parse_info(2, REPO2, STANZA, text, "")
    assert [b.label for b in one.backups] == ["20261130-010000F"] and not one.encrypted
    assert [b.label for b in two.backups] == ["20261130-020000F"] and two.encrypted


@pytest.mark.parametrize("text", ["ERROR: [055]: unable to load info file", "", "null", "[1, 2]", '{"name": 1}'])
def test_an_answer_that_is_not_pgbackrest_s_json_is_a_catalog_error_naming_the_host(text: str) -> None:
    with pytest.raises(CatalogError, match=r"^fra1-web-2: pgBackRest's info is not the JSON expected \("):
        parse_info(2, REPO2, STANZA, text, "")


def odd_backup(**change: Any) -> dict[str, Any]:
    """REPO2_FULL with some fields replaced (None: removed)."""
    b = json.loads(json.dumps(REPO2_FULL))
    for key, value in change.items():
        if value is None:
            b.pop(key)
        else:
            b[key] = value
    return b


@pytest.mark.parametrize(("backup", "why"), [
    (odd_backup(timestamp=None), "KeyError('start')"),  # no times at all
    (odd_backup(timestamp={"start": 1795915801}), "KeyError('stop')"),
    (odd_backup(timestamp={"start": "yesterday", "stop": 1795915870}), "TypeError("),
    (odd_backup(timestamp={"start": None, "stop": 1795915870}), "TypeError("),
    (odd_backup(info={"size": "big", "repository": {"delta": 1}}), "ValueError("),
    (odd_backup(info={"size": 1, "repository": {"delta": None}}), "TypeError("),
])
def test_a_backup_entry_it_does_not_understand_is_a_catalog_error_naming_the_host(backup: dict[str, Any],
                                                                                 why: str) -> None:
    with pytest.raises(CatalogError) as exc:
        parse_info(2, REPO2, STANZA, info_json(2, [backup]), REPO2_NEWEST_WAL)
    assert str(exc.value).startswith(f"fra1-web-2: pgBackRest's info has an entry this does not understand ({why}")
    # the same entry in another repository's list is not read at all
    assert parse_info(1, REPO1, STANZA, info_json(2, [backup]), "").backups == ()


@pytest.mark.parametrize("newest", ["yesterday", "1796014770.28 1796014771", "nan?"])
def test_a_newest_wal_that_is_not_a_time_is_a_catalog_error(newest: str) -> None:
    with pytest.raises(CatalogError, match=r"^ams1-web-2: pgBackRest's info has an entry this does not understand "
                                           r"\(ValueError\("):
        parse_info(1, REPO1, STANZA, REPO1_INFO, newest)


# --- catalog: the restore target ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["2026-11-30T05:40:00Z", "2026-11-30T05:40:00+00:00", "2026-11-30 06:40:00+01:00",
                                  "2026-11-29T23:40:00-06:00", "  2026-11-30T05:40:00Z\n"])
def test_a_target_with_its_zone_is_read_as_utc(text: str) -> None:
    got = parse_target(text)
    assert got == utc("2026-11-30T05:40:00") and got.utcoffset() == timedelta(0)


def test_a_target_keeps_its_fraction_of_a_second() -> None:
    assert parse_target("2026-11-30T05:40:00.250+01:00") == utc("2026-11-30T04:40:00.250")


@pytest.mark.parametrize("text", ["2026-11-30T05:40:00", "2026-11-30 05:40", "2026-11-30"])
def test_a_target_without_a_zone_is_refused_saying_how_to_add_one(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_target(text)
    assert str(exc.value) == (f"--time {text!r} has no time zone: add one (Z for UTC, or e.g. +01:00) so that it "
                              "means the same on every server")


@pytest.mark.parametrize("text", ["yesterday", "", "05:40", "2026-13-01T00:00:00Z", "1796014770"])
def test_a_target_that_is_not_a_time_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_target(text)
    assert str(exc.value) == (f"--time {text!r} is not a time: write it as ISO 8601 with its zone, e.g. "
                              "2026-11-30T05:40:00Z")


def test_pg_time_is_what_recovery_target_time_reads_in_utc() -> None:
    assert pg_time(utc("2026-11-30T05:40:00")) == "2026-11-30 05:40:00.000000+00"
    assert pg_time(datetime(2026, 11, 30, 6, 40, 0, 123456, tzinfo=timezone(timedelta(hours=1)))) == \
        "2026-11-30 05:40:00.123456+00"
    assert pg_time(parse_target("2026-11-30 06:40:00+01:00")) == "2026-11-30 05:40:00.000000+00"


def catalog(index: int, host: str, span: tuple[str, str] | None) -> RepoCatalog:
    """A repository whose one backup ended at span[0] and whose newest WAL arrived at span[1]."""
    if span is None:
        return RepoCatalog(index, host, "no valid backups", True, (), None)
    b = BackupEntry(f"b{index}", "full", utc(span[0]) - timedelta(minutes=1), utc(span[0]), 1, 1, "", "")
    return RepoCatalog(index, host, "ok", True, (b,), utc(span[1]))


def test_covering_picks_the_first_repository_whose_range_holds_the_target() -> None:
    empty = catalog(1, "a", None)
    late = catalog(2, "b", ("2026-11-29T00:00:00", "2026-11-30T00:00:00"))
    early = catalog(3, "c", ("2026-11-28T00:00:00", "2026-11-29T12:00:00"))
    both = [empty, late, early]
    assert covering(both, utc("2026-11-29T06:00:00")) is late  # in both: the first listed
    assert covering([empty, early, late], utc("2026-11-29T06:00:00")) is early
    assert covering(both, utc("2026-11-28T06:00:00")) is early  # only the older range reaches back that far
    assert covering(both, utc("2026-11-29T18:00:00")) is late  # only the newer one reaches that far
    assert covering(both, utc("2026-11-27T00:00:00")) is None
    assert covering(both, utc("2026-11-30T00:00:01")) is None
    assert covering([], utc("2026-11-29T06:00:00")) is None
    # the ends are included
    assert covering(both, utc("2026-11-28T00:00:00")) is early
    assert covering(both, utc("2026-11-30T00:00:00")) is late


# --- scripts --------------------------------------------------------------------------------------------------

PGBACKREST = f"runuser -u postgres -- /usr/bin/pgbackrest --stanza={STANZA}"
TARGET = "2026-11-29 12:00:00.000000+00"
SEGMENT = "00000001000000000000002B"  # the WAL segment the leader's switch completes, in these tests


def syntax_ok(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, check=False)


def run_sh(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a script with tmp_path/bin (stand-in tools) first on PATH."""
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False, env=env,
                          stdin=subprocess.DEVNULL, timeout=30)


def tool(tmp_path: Path, name: str, body: str) -> None:
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def all_scripts() -> dict[str, str]:
    return {
        "backup": scripts.backup(STANZA, 1, "full"),
        "info": scripts.info(STANZA, 2),
        "switch_wal": scripts.switch_wal(5432),
        "wait_wal": scripts.wait_wal(STANZA, SEGMENT),
        "patroni_leader": scripts.patroni_leader(),
        "stop_patroni": scripts.stop_patroni(),
        "forget_cluster": scripts.forget_cluster(STANZA, LEADER),
        "restore_member": scripts.restore_member(STANZA, 2, DATA_DIR, TARGET, 5432),
        "set_aside": scripts.set_aside(DATA_DIR),
        "drop_aside": scripts.drop_aside(DATA_DIR),
        "start_patroni": scripts.start_patroni(),
        "wait_role": scripts.wait_role("10.77.167.178:8008", "primary", 300),
        "wait_writable": scripts.wait_writable(5432, 300),
        "drill": scripts.drill(STANZA, 1, TARGET, "select count(*) from posts", "chirp", False),
        "drill newest, kept": scripts.drill(STANZA, 2, None, None, "chirp", True),
    }


@pytest.mark.parametrize("name", list(all_scripts()))
def test_every_script_is_valid_sh(name: str) -> None:
    checked = syntax_ok(all_scripts()[name])
    assert checked.returncode == 0, checked.stderr


def test_backup_takes_one_into_this_repository_then_reports_it_as_json() -> None:
    assert scripts.backup(STANZA, 2, "diff") == (
        f"if ! {PGBACKREST} --repo=2 --type=diff --log-level-console=info backup >/tmp/deploykit-backup.log 2>&1; "
        "then tail -n 15 /tmp/deploykit-backup.log >&2; exit 1; fi; "
        f"{PGBACKREST} --repo=2 --output=json info")


def test_info_prints_the_json_then_the_newest_wal_s_arrival() -> None:
    assert scripts.info(STANZA, 1) == (
        f"{PGBACKREST} --repo=1 --output=json info && echo @@deploykit@@ && "
        "{ find /var/lib/pgbackrest/archive/chirp-lab -type f -name '????????????????????????-*' "
        "! -name '*.tmp' -printf '%T@\\n' 2>/dev/null | sort -n | tail -n 1; true; }")


def test_info_s_newest_wal_is_the_latest_segment_arrival_not_history_or_backup_labels(tmp_path: Path) -> None:
    """The find part run for real over a repository-shaped tree (the pgbackrest part replaced)."""
    archive = tmp_path / "archive" / STANZA / "15-1" / "0000000100000000"
    archive.mkdir(parents=True)
    files = {"000000010000000000000003-3c2b4a.gz": 1796000000, "00000001000000000000002A-9f8e7d.gz": 1796014770,
             "000000010000000000000021-aa11bb.gz": 1796010000}
    for name, mtime in files.items():
        (archive / name).write_text("")
        os.utime(archive / name, (mtime, mtime))
    # newer, but not WAL segments
    for name in ("00000002.history", "000000010000000000000021.00000028.backup"):
        (archive.parent / name).write_text("")
    # newer, but still being written by pgBackRest (renamed without .pgbackrest.tmp once complete)
    writing = archive / "00000001000000000000002B-1a2b3c.gz.pgbackrest.tmp"
    writing.write_text("")
    os.utime(writing, (1796014800, 1796014800))
    script = scripts.info(STANZA, 1).replace(f"{PGBACKREST} --repo=1 --output=json info", "echo '[]'")
    script = script.replace("/var/lib/pgbackrest/archive", str(tmp_path / "archive"))
    done = run_sh(script, tmp_path)
    assert done.returncode == 0, done.stderr
    text, _, newest = done.stdout.partition(scripts.SEP)
    assert text.strip() == "[]" and float(newest.strip()) == 1796014770
    # an empty archive: nothing after the separator, and no failure
    empty = run_sh(script.replace(str(tmp_path / "archive"), str(tmp_path / "none")), tmp_path)
    assert empty.returncode == 0 and empty.stdout.partition(scripts.SEP)[2].strip() == ""


PSQL_AS_POSTGRES = "runuser -u postgres -- /usr/bin/psql -XAtq"


def test_switch_wal_commits_once_then_switches_and_prints_the_completed_segment() -> None:
    assert scripts.switch_wal(5433) == (
        f"{PSQL_AS_POSTGRES} -p 5433 -d postgres -c 'select pg_current_xact_id()' >/dev/null && "
        f"{PSQL_AS_POSTGRES} -p 5433 -d postgres -c 'select pg_walfile_name(pg_switch_wal())'")


RUNUSER = """\
echo "$*" >> {log}
case "$*" in
  *pg_switch_wal*) echo {segment} ;;
  *pg_current_xact_id*) echo 1234; exit {commit_rc} ;;
esac"""


def test_switch_wal_run_with_a_stand_in_psql_prints_only_the_segment(tmp_path: Path) -> None:
    log = tmp_path / "runuser.log"
    tool(tmp_path, "runuser", RUNUSER.format(log=log, segment=SEGMENT, commit_rc=0))
    done = run_sh(scripts.switch_wal(5432), tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{SEGMENT}\n"  # the commit's xid is not printed: the last line is the segment
    assert log.read_text().splitlines() == [
        "-u postgres -- /usr/bin/psql -XAtq -p 5432 -d postgres -c select pg_current_xact_id()",
        "-u postgres -- /usr/bin/psql -XAtq -p 5432 -d postgres -c select pg_walfile_name(pg_switch_wal())",
    ]
    # the commit failed: no switch, and the step fails
    log.unlink()
    tool(tmp_path, "runuser", RUNUSER.format(log=log, segment=SEGMENT, commit_rc=2))
    failed = run_sh(scripts.switch_wal(5432), tmp_path)
    assert failed.returncode != 0 and SEGMENT not in failed.stdout
    assert len(log.read_text().splitlines()) == 1


def test_wait_wal_polls_this_repository_s_archive_for_the_segment_until_a_deadline() -> None:
    assert scripts.wait_wal(STANZA, SEGMENT) == (
        f"seg={SEGMENT}; deadline=$(( $(date +%s) + 120 )); "
        "until find /var/lib/pgbackrest/archive/chirp-lab -type f -name \"$seg-*\" ! -name '*.tmp' 2>/dev/null "
        "| grep -q .; do [ \"$(date +%s)\" -lt \"$deadline\" ] || "
        "{ echo \"WAL segment $seg did not arrive within 120 s\" >&2; exit 1; }; sleep 1; done")
    assert "deadline=$(( $(date +%s) + 7 ))" in scripts.wait_wal(STANZA, SEGMENT, timeout_s=7)
    assert "within 7 s" in scripts.wait_wal(STANZA, SEGMENT, timeout_s=7)


def wal_repository(tmp_path: Path) -> tuple[Path, Path]:
    """A repository-shaped tree (REPO_PATH/archive/<stanza>/<db>/<timeline+log>/), without the segment."""
    root = tmp_path / "pgbackrest"
    archive = root / "archive" / STANZA / "15-1" / "0000000100000000"
    archive.mkdir(parents=True)
    # near misses: the segment before, a partial segment, a backup label and a history file
    for name in ("00000001000000000000002A-9f8e7d.gz", f"{SEGMENT}.partial-aa11bb.gz",
                 f"{SEGMENT}.00000028.backup", "00000002.history"):
        (archive / name).write_text("")
    return root, archive


def wait_wal_in(root: Path, segment: str, timeout_s: int) -> str:
    script = scripts.wait_wal(STANZA, segment, timeout_s=timeout_s)
    assert "/var/lib/pgbackrest/" in script
    return script.replace("/var/lib/pgbackrest", str(root))


def test_wait_wal_run_for_real_ends_once_the_segment_is_in_the_repository(tmp_path: Path) -> None:
    root, archive = wal_repository(tmp_path)
    (archive / f"{SEGMENT}-3c2b4a5d.gz").write_text("")
    done = run_sh(wait_wal_in(root, SEGMENT, 120), tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_wait_wal_run_for_real_fails_saying_so_when_the_segment_does_not_arrive(tmp_path: Path) -> None:
    root, _ = wal_repository(tmp_path)
    failed = run_sh(wait_wal_in(root, SEGMENT, 0), tmp_path)
    assert failed.returncode == 1
    assert failed.stderr == f"WAL segment {SEGMENT} did not arrive within 0 s\n"
    # no archive at all (no stanza yet): the same, not a find error
    failed = run_sh(wait_wal_in(tmp_path / "none", SEGMENT, 0), tmp_path)
    assert (failed.returncode, failed.stderr) == (1, f"WAL segment {SEGMENT} did not arrive within 0 s\n")


def test_wait_wal_run_for_real_waits_for_a_segment_that_arrives_later(tmp_path: Path) -> None:
    root, archive = wal_repository(tmp_path)
    # the stand-in sleep is when the segment arrives (and the wait takes no time)
    naps = tmp_path / "naps"
    tool(tmp_path, "sleep", f"echo \"$*\" >> {naps}; : > {archive}/{SEGMENT}-3c2b4a5d.gz")
    done = run_sh(wait_wal_in(root, SEGMENT, 120), tmp_path)
    assert done.returncode == 0, done.stderr
    assert naps.read_text() == "1\n"  # looked, slept once, found it


def test_wait_wal_does_not_take_a_segment_still_being_written(tmp_path: Path) -> None:
    # pgBackRest writes '<name>.pgbackrest.tmp' and renames it once complete: only the complete file counts
    root, archive = wal_repository(tmp_path)
    writing = archive / f"{SEGMENT}-3c2b4a5d.gz.pgbackrest.tmp"
    writing.write_text("")
    failed = run_sh(wait_wal_in(root, SEGMENT, 0), tmp_path)
    assert (failed.returncode, failed.stderr) == (1, f"WAL segment {SEGMENT} did not arrive within 0 s\n")
    writing.rename(archive / f"{SEGMENT}-3c2b4a5d.gz")
    done = run_sh(wait_wal_in(root, SEGMENT, 0), tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("segment", ["it's", "$(touch pwned)", "a b; touch pwned", '"; touch pwned; "'])
def test_wait_wal_quotes_any_segment(tmp_path: Path, segment: str) -> None:
    script = scripts.wait_wal(STANZA, segment)
    assert syntax_ok(script).returncode == 0
    assert script.startswith(f"seg={shlex.quote(segment)}; ")
    # run for real: the segment is searched for and said as it is, and nothing in it is run
    root, archive = wal_repository(tmp_path)
    failed = subprocess.run(["sh", "-c", wait_wal_in(root, segment, 0)], capture_output=True, text=True,
                            check=False, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=30)
    assert (failed.returncode, failed.stderr) == (1, f"WAL segment {segment} did not arrive within 0 s\n")
    assert not (tmp_path / "pwned").exists()
    (archive / f"{segment}-3c2b4a5d.gz").write_text("")
    done = subprocess.run(["sh", "-c", wait_wal_in(root, segment, 0)], capture_output=True, text=True,
                          check=False, cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=30)
    assert (done.returncode, done.stderr) == (0, "")
    assert not (tmp_path / "pwned").exists()


def test_patroni_commands() -> None:
    assert scripts.patroni_leader() == "patronictl -c /etc/patroni/config.yml list -f json"
    assert scripts.stop_patroni() == "systemctl stop patroni && ! systemctl is-active --quiet patroni"
    assert scripts.start_patroni() == "systemctl start patroni"


def test_forget_cluster_answers_patronictl_s_three_questions() -> None:
    assert scripts.forget_cluster(STANZA, LEADER) == (
        "printf %s 'chirp-lab\nYes I am aware\nfra1-data-1\n' | patronictl -c /etc/patroni/config.yml remove "
        "chirp-lab >/dev/null && ! patronictl -c /etc/patroni/config.yml list -f json | grep -q '\"Member\"'")


PATRONICTL = """\
log={log}
echo "$*" >> "$log"
case "$*" in
  *remove*) cat >> "$log" ;;
  *list*) cat {members} ;;
esac"""


def test_forget_cluster_run_with_a_stand_in_patronictl(tmp_path: Path) -> None:
    log, members = tmp_path / "patronictl.log", tmp_path / "members.json"
    tool(tmp_path, "patronictl", PATRONICTL.format(log=log, members=members))
    members.write_text("[]")
    done = run_sh(scripts.forget_cluster(STANZA, LEADER), tmp_path)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == ("-c /etc/patroni/config.yml remove chirp-lab\n"
                               "chirp-lab\nYes I am aware\nfra1-data-1\n"
                               "-c /etc/patroni/config.yml list -f json\n")
    # a member still listed afterwards: the cluster was not forgotten, the step fails
    members.write_text('[{"Cluster": "chirp-lab", "Member": "fra1-data-1", "Role": "Leader"}]')
    assert run_sh(scripts.forget_cluster(STANZA, LEADER), tmp_path).returncode != 0


def test_forget_cluster_quotes_odd_names() -> None:
    script = scripts.forget_cluster("it's", "a b")
    assert syntax_ok(script).returncode == 0
    assert shlex.split(script.split(" | ")[0]) == ["printf", "%s", "it's\nYes I am aware\na b\n"]
    assert "remove 'it'\"'\"'s' >/dev/null" in script


def test_restore_member_recovers_to_the_time_with_delta_and_promotes() -> None:
    script = scripts.restore_member(STANZA, 2, DATA_DIR, TARGET, 5433)
    lines = script.splitlines()
    assert lines[0] == "set -e"
    assert lines[1] == (f"{PGBACKREST} --repo=2 --delta --type=time --target='2026-11-29 12:00:00.000000+00' "
                        "--target-action=promote --log-level-console=warn restore")
    ctl = f"runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D {DATA_DIR}"
    assert f"{ctl} -l /var/log/postgresql/deploykit-restore.log -w -t 3600 start >/dev/null" in lines
    assert lines[-1] == f"{ctl} -m fast -w stop >/dev/null"  # stopped cleanly: Patroni starts it next
    # it waits for the promotion, and reports the last transaction and the new timeline
    assert any("select pg_is_in_recovery()" in line and line.startswith("until ") for line in lines)
    assert "grep -o 'last completed transaction was at log time .*' /var/log/postgresql/deploykit-restore.log " \
           "| tail -n 1 || true" in lines
    assert any("pg_control_checkpoint()" in line and "sed 's/^/timeline /'" in line for line in lines)
    # PostgreSQL is asked on the cluster's own port (the restored settings are the cluster's)
    psql = [line for line in lines if "/usr/bin/psql" in line]
    assert len(psql) == 2 and all("/usr/bin/psql -XAtq -h /var/run/postgresql -p 5433 -d postgres -c" in line
                                  for line in psql)
    assert "archive_mode" not in script  # the restored cluster archives again, on its new timeline


def test_the_target_is_shell_quoted() -> None:
    odd = "2026-11-29 12:00:00'; rm -rf / #"
    member = scripts.restore_member(STANZA, 1, DATA_DIR, odd, 5432)
    assert syntax_ok(member).returncode == 0
    assert f"--target={odd}" in shlex.split(member.splitlines()[1])
    drill = scripts.drill(STANZA, 1, odd, None, "chirp", False)
    restore_line = next(line for line in drill.splitlines() if line.endswith(" restore"))
    assert f"--target={odd}" in shlex.split(restore_line)


def drill_settings(script: str, tmp_path: Path) -> list[str]:
    """The lines the drill appends to postgresql.auto.conf: its printf line run for real, to stdout."""
    line = next(line for line in script.splitlines() if line.startswith("printf '%s\\n' "))
    target = f" >> {scripts.DRILL_DIR}/postgresql.auto.conf"
    assert line.endswith(target)
    done = run_sh(line[: -len(target)], tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_drill_restores_locally_and_archives_nothing(tmp_path: Path) -> None:
    d = scripts.DRILL_DIR
    script = scripts.drill(STANZA, 1, TARGET, None, "chirp", False)
    assert (f"{PGBACKREST} --repo=1 --reset-pg1-host --pg1-path={d} --type=time "
            "--target='2026-11-29 12:00:00.000000+00' --target-action=promote --log-level-console=warn restore"
            ) in script.splitlines()
    settings = drill_settings(script, tmp_path)
    assert settings == [
        "# restore drill (deploykit): local only, archives nothing, applied after the restored settings",
        "port = 5499",
        "listen_addresses = ''",
        f"unix_socket_directories = '{d}'",
        "archive_mode = off",
        "hot_standby = on",
        "synchronous_standby_names = ''",
        "primary_conninfo = ''",
        f"hba_file = '{d}/pg_hba.conf'",
        f"ident_file = '{d}/pg_ident.conf'",
        "cluster_name = 'deploykit-drill'",
        # WAL from this host's repository, pg1 being the scratch directory here (not a member over SSH)
        f"restore_command = '/usr/bin/pgbackrest --stanza=chirp-lab --repo=1 --reset-pg1-host --pg1-path={d} "
        "archive-get %f \"%p\"'",
    ]
    assert "--delta" not in script  # a fresh, empty directory every time


def test_a_drill_s_order_stop_a_kept_one_start_afresh_restore_then_configure_then_start(tmp_path: Path) -> None:
    d = scripts.DRILL_DIR
    lines = scripts.drill(STANZA, 1, None, None, "chirp", False).splitlines()
    ctl = f"runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D {d}"

    def at(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    assert lines[0] == "set -e"
    assert lines[1] == f"{ctl} -m immediate stop >/dev/null 2>&1 || true"
    assert lines[2] == f"rm -rf {d} && install -d -o postgres -g postgres -m 0700 {d}"
    assert at(PGBACKREST) < at("printf ") < at(f"{ctl} -l ") < at("until ") < at(f"echo {scripts.SEP}")
    assert lines[-2:] == [f"{ctl} -m fast -w stop >/dev/null", f"rm -rf {d}"]


def test_a_drill_to_the_newest_wal_has_no_target() -> None:
    script = scripts.drill(STANZA, 2, None, None, "chirp", False)
    assert f"{PGBACKREST} --repo=2 --reset-pg1-host --pg1-path={scripts.DRILL_DIR} --log-level-console=warn " \
           "restore" in script.splitlines()
    assert "--type" not in script and "--target" not in script


def test_a_kept_drill_is_left_running_and_a_query_runs_after_the_separator() -> None:
    query = "select body from posts where body like '%it''s%'"
    kept = scripts.drill(STANZA, 1, None, query, "chirp", True).splitlines()
    assert kept[-2] == f"echo {scripts.SEP}"
    assert shlex.split(kept[-1]) == ["runuser", "-u", "postgres", "--", "/usr/bin/psql", "-XAt", "-F", " | ", "-h",
                                     scripts.DRILL_DIR, "-p", "5499", "-d", "chirp", "-c", query]
    assert not any(line.startswith("rm -rf") or " stop >/dev/null" in line for line in kept[3:])
    assert syntax_ok("\n".join(kept)).returncode == 0


def test_set_aside_and_drop_aside_run_for_real(tmp_path: Path) -> None:
    data = tmp_path / "15" / "chirp-lab"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    aside = Path(f"{data}.before-restore")
    assert scripts.set_aside(str(data)) == (f"if [ -d {aside} ]; then rm -rf {data}; elif [ -d {data} ]; then "
                                            f"mv {data} {aside}; fi")
    assert run_sh(scripts.set_aside(str(data)), tmp_path).returncode == 0
    assert not data.exists() and sorted(p.name for p in aside.iterdir()) == ["PG_VERSION"]
    assert (aside / "PG_VERSION").read_text() == "15\n"
    # a new data directory since (a clone the failed restore began): removed, the old copy aside is kept
    data.mkdir()
    (data / "new").write_text("")
    assert run_sh(scripts.set_aside(str(data)), tmp_path).returncode == 0
    assert not data.exists() and sorted(p.name for p in aside.iterdir()) == ["PG_VERSION"]
    assert scripts.drop_aside(str(data)) == f"rm -rf {data}.before-restore"
    assert run_sh(scripts.drop_aside(str(data)), tmp_path).returncode == 0 and not aside.exists()


def test_set_aside_run_again_keeps_the_only_copy_of_the_old_data(tmp_path: Path) -> None:
    data = tmp_path / "15" / "chirp-lab"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    assert run_sh(scripts.set_aside(str(data)), tmp_path).returncode == 0
    assert run_sh(scripts.set_aside(str(data)), tmp_path).returncode == 0  # the restore, run again
    assert (Path(f"{data}.before-restore") / "PG_VERSION").read_text() == "15\n"
    assert not data.exists()


def test_set_aside_with_neither_directory_does_nothing_and_succeeds(tmp_path: Path) -> None:
    data = tmp_path / "15" / "chirp-lab"
    data.parent.mkdir(parents=True)
    done = run_sh(scripts.set_aside(str(data)), tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert list(data.parent.iterdir()) == []


def test_wait_role_polls_patroni_s_endpoint_until_a_deadline(tmp_path: Path) -> None:
    assert scripts.wait_role("10.77.167.178:8008", "replica", 1800) == (
        "deadline=$(( $(date +%s) + 1800 )); until curl -fsS -o /dev/null -m 3 http://10.77.167.178:8008/replica; "
        "do [ \"$(date +%s)\" -lt \"$deadline\" ] || { echo 'not a running replica after 1800 s' >&2; exit 1; }; "
        "sleep 1; done")
    calls = tmp_path / "curl.log"
    tool(tmp_path, "curl", f'echo "$*" >> {calls}; exit 0')
    assert run_sh(scripts.wait_role("10.0.0.1:8008", "primary", 5), tmp_path).returncode == 0
    assert calls.read_text() == "-fsS -o /dev/null -m 3 http://10.0.0.1:8008/primary\n"
    tool(tmp_path, "curl", "exit 22")
    failed = run_sh(scripts.wait_role("10.0.0.1:8008", "primary", 0), tmp_path)
    assert failed.returncode == 1 and failed.stderr.strip() == "not a running primary after 0 s"


def test_wait_writable_polls_postgresql_until_it_is_out_of_recovery(tmp_path: Path) -> None:
    assert scripts.wait_writable(5433, 300) == (
        "deadline=$(( $(date +%s) + 300 )); "
        f"until [ \"$({PSQL_AS_POSTGRES} -p 5433 -d postgres -c 'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; "
        "do [ \"$(date +%s)\" -lt \"$deadline\" ] || { echo 'PostgreSQL still read-only after 300 s' >&2; exit 1; }; "
        "sleep 1; done")
    # run with a stand-in psql: in recovery twice (the stand-in sleep counts), then promoted
    calls, naps = tmp_path / "runuser.log", tmp_path / "naps"
    tool(tmp_path, "runuser", f'echo "$*" >> {calls}; [ "$(wc -l < {naps} 2>/dev/null || echo 0)" -ge 2 ] '
                              '&& echo f || echo t')
    tool(tmp_path, "sleep", f'echo "$*" >> {naps}')
    done = run_sh(scripts.wait_writable(5432, 300), tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert calls.read_text().splitlines() == [
        "-u postgres -- /usr/bin/psql -XAtq -p 5432 -d postgres -c select pg_is_in_recovery()"] * 3
    # still in recovery at the deadline (or psql failing): the step fails saying so
    tool(tmp_path, "runuser", "echo t")
    failed = run_sh(scripts.wait_writable(5432, 0), tmp_path)
    assert (failed.returncode, failed.stderr) == (1, "PostgreSQL still read-only after 0 s\n")
    tool(tmp_path, "runuser", "echo 'psql: error: connection refused' >&2; exit 2")
    failed = run_sh(scripts.wait_writable(5432, 0), tmp_path)
    assert (failed.returncode, failed.stderr) == (1, "PostgreSQL still read-only after 0 s\n")


# --- the fake executor ----------------------------------------------------------------------------------------

@dataclass
class Sent:
    description: str
    commands: dict[str, str]  # host -> command, in the order given
    unreachable: list[str] = field(default_factory=list)  # hosts it was also given, not connected: sent nothing

    @property
    def hosts(self) -> list[str]:
        return list(self.commands)


@dataclass
class FakeHosts:
    """Stands in for deploykit.execute.executor: connect/disconnect, and sessions that answer from a script."""

    answers: dict[str, list[tuple[str, bool, str]]] = field(default_factory=dict)
    down: dict[str, str] = field(default_factory=dict)  # host -> why it cannot be reached
    delays: dict[str, float] = field(default_factory=dict)  # substring -> seconds the clock moves when it runs
    sent: list[Sent] = field(default_factory=list)
    connected: list[str] | None = None  # the hosts connect() was asked for
    disconnected: int = 0
    now: float = 1000.0

    def answer(self, host: str, match: str, output: str = "", ok: bool = True) -> FakeHosts:
        """`host`'s steps whose description or command contains `match` end so (the first match wins)."""
        self.answers.setdefault(host, []).append((match, ok, output))
        return self

    # executor's API
    def connect(self, hosts: Any, **_: Any) -> FakeSession:
        assert self.connected is None, "connected twice"
        self.connected = [h.name for h in hosts]
        return FakeSession(self, {n: why for n, why in self.down.items() if n in self.connected})

    def disconnect(self, session: FakeSession) -> None:
        assert session.hosts is self
        self.disconnected += 1

    def monotonic(self) -> float:
        return self.now

    # what happened
    def descriptions(self) -> list[str]:
        return [s.description for s in self.sent]

    def commands(self) -> list[str]:
        return [c for s in self.sent for c in s.commands.values()]

    def step(self, description: str) -> Sent:
        return next(s for s in self.sent if s.description == description)


@dataclass
class FakeSession:
    hosts: FakeHosts
    unreachable: dict[str, str]

    def run(self, steps: dict[str, list[Any]]) -> dict[str, HostOutcome]:
        """Each host's steps in order (like executor.run_steps): an unreachable host is "not connected"."""
        outcomes: dict[str, HostOutcome] = {}
        took = 0.0  # the hosts run in parallel: the call takes as long as its slowest host
        for host, host_steps in steps.items():
            assert all(isinstance(s, Shell) for s in host_steps)
            if host in self.unreachable:
                outcomes[host] = HostOutcome(False, "not connected")
                continue
            outcome = HostOutcome()
            for s in host_steps:
                assert self.hosts.connected is not None and host in self.hosts.connected, f"{host} not connected"
                ok, output = next(((ok, out) for m, ok, out in self.hosts.answers.get(host, [])
                                   if m in s.description or m in s.command), (True, ""))
                took = max(took, sum(t for m, t in self.hosts.delays.items() if m in s.description or m in s.command))
                if not ok:
                    outcome = HostOutcome(False, f"{s.description}: {output}", outcome.steps_done, output="")
                    break
                outcome = HostOutcome(True, "", outcome.steps_done + 1, output=output)
            outcomes[host] = outcome
        self.hosts.now += took
        # operations.py sends one step, the same description on every host, per call
        descriptions = {s.description for host_steps in steps.values() for s in host_steps}
        assert len(descriptions) == 1 and all(len(ss) == 1 for ss in steps.values()), steps
        self.hosts.sent.append(Sent(descriptions.pop(), {h: ss[0].command for h, ss in steps.items()
                                                         if h not in self.unreachable},
                                    [h for h in steps if h in self.unreachable]))
        return outcomes


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeHosts:
    hosts = FakeHosts()
    monkeypatch.setattr(executor, "connect", hosts.connect)
    monkeypatch.setattr(executor, "disconnect", hosts.disconnect)
    monkeypatch.setattr(operations, "time", SimpleNamespace(monotonic=hosts.monotonic))
    monkeypatch.setattr(operations, "datetime", FrozenDatetime)
    return hosts


@dataclass
class Consoles:
    out: Console
    err: Console

    @property
    def stdout(self) -> str:
        return self.out.file.getvalue()  # type: ignore[attr-defined]

    @property
    def stderr(self) -> str:
        return self.err.file.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def io() -> Consoles:
    def console() -> Console:
        return Console(file=StringIO(), width=200, highlight=False, color_system=None, soft_wrap=True)

    return Consoles(console(), console())


def repositories_answer(fake: FakeHosts, repo1: str | None = None, repo2: str | None = None) -> FakeHosts:
    fake.answer(REPO1, "read the repository", repo1 or info_answer(REPO1_INFO, REPO1_NEWEST_WAL))
    fake.answer(REPO2, "read the repository", repo2 or info_answer(REPO2_INFO, REPO2_NEWEST_WAL))
    return fake


# --- deploykit backup -----------------------------------------------------------------------------------------

def after_backup(key: int, label: str) -> str:
    """pgBackRest's info once a new full backup (40 MiB, stored in 6.5 MiB) is in repository `key`."""
    new = backup_json(label, "full", 1796016000, 1796016061, 41943040, 6815744, key)
    return info_json(key, [REPO2_FULL | {"database": {"id": 1, "repo-key": key}}, new])


def test_backup_runs_the_repositories_one_after_the_other(fake: FakeHosts, io: Consoles) -> None:
    fake.answer(REPO1, "backup into repo1", after_backup(1, "20261130-052000F"))
    fake.answer(REPO2, "backup into repo2", after_backup(2, "20261130-052101F"))
    fake.delays = {"backup into repo1": 61.0, "backup into repo2": 58.5}
    assert take_backup(LAB, "full", (), io.out, io.err) == 0
    assert fake.connected == [REPO1, REPO2]
    assert [(s.description, s.commands) for s in fake.sent] == [
        ("full backup into repo1", {REPO1: scripts.backup(STANZA, 1, "full")}),
        ("full backup into repo2", {REPO2: scripts.backup(STANZA, 2, "full")}),
    ]
    assert io.stdout.splitlines() == [
        "repo1 (ams1-web-2): full backup 20261130-052000F, 40.0 MiB (stored 6.5 MiB) in 61.0 s",
        "repo2 (fra1-web-2): full backup 20261130-052101F, 40.0 MiB (stored 6.5 MiB) in 58.5 s",
    ]
    assert io.stderr.splitlines()[-1] == "2 of 2 repositories backed up in 119.5 s"
    assert fake.disconnected == 1


def test_backup_goes_on_with_the_other_repository_when_one_host_is_unreachable(fake: FakeHosts,
                                                                              io: Consoles) -> None:
    fake.down = {REPO1: "unreachable: timed out"}
    fake.answer(REPO2, "backup into repo2", after_backup(2, "20261130-052101F"))
    assert take_backup(LAB, "incr", (), io.out, io.err) == 1
    assert [(s.description, s.hosts) for s in fake.sent] == [("incr backup into repo2", [REPO2])]
    assert "--type=incr" in fake.sent[0].commands[REPO2]
    assert io.stdout.splitlines() == ["repo2 (fra1-web-2): incr backup 20261130-052101F, 40.0 MiB (stored 6.5 MiB) "
                                      "in 0.0 s"]
    assert "ams1-web-2: unreachable: timed out" in io.stderr
    assert "connected to 1 of 2 hosts" in io.stderr
    assert io.stderr.splitlines()[-1] == "1 of 2 repositories backed up in 0.0 s"
    assert fake.disconnected == 1


def test_a_failed_backup_is_reported_and_the_next_repository_still_backed_up(fake: FakeHosts,
                                                                            io: Consoles) -> None:
    fake.answer(REPO1, "backup into repo1", "ERROR: [082]: WAL segment was not archived before the 60000ms timeout",
                ok=False)
    fake.answer(REPO2, "backup into repo2", after_backup(2, "20261130-052101F"))
    fake.delays = {"backup into repo1": 60.2}
    assert take_backup(LAB, "full", (), io.out, io.err) == 1
    assert fake.descriptions() == ["full backup into repo1", "full backup into repo2"]
    assert ("repo1 (ams1-web-2): full backup failed after 60.2 s: full backup into repo1: ERROR: [082]: WAL "
            "segment was not archived before the 60000ms timeout") in io.stderr
    assert io.stdout.startswith("repo2 (fra1-web-2): full backup 20261130-052101F")
    assert "1 of 2 repositories backed up" in io.stderr


def test_a_backup_that_lists_no_backup_says_so(fake: FakeHosts, io: Consoles) -> None:
    fake.answer(REPO1, "backup into repo1", info_json(1, []))
    assert take_backup(LAB, "full", ("repo1",), io.out, io.err) == 0
    assert io.stdout.strip() == "repo1 (ams1-web-2): full backup no backup listed in 0.0 s"


@pytest.mark.parametrize(("wanted", "hosts"), [
    (("fra1-web-2",), [REPO2]),
    (("repo1",), [REPO1]),
    (("repo2", "ams1-web-2"), [REPO2, REPO1]),  # in the order asked
])
def test_backup_repo_by_host_or_by_number(fake: FakeHosts, io: Consoles, wanted: tuple[str, ...],
                                          hosts: list[str]) -> None:
    fake.answer(REPO1, "backup into repo1", after_backup(1, "20261130-052000F"))
    fake.answer(REPO2, "backup into repo2", after_backup(2, "20261130-052101F"))
    assert take_backup(LAB, "diff", wanted, io.out, io.err) == 0
    assert [s.hosts for s in fake.sent] == [[h] for h in hosts]
    assert sorted(fake.connected or []) == sorted(hosts)
    index = {REPO1: 1, REPO2: 2}
    assert [s.commands[h] for s, h in zip(fake.sent, hosts, strict=True)] == [
        scripts.backup(STANZA, index[h], "diff") for h in hosts]


@pytest.mark.parametrize(("report", "why"), [
    ("WARN: a stray line\n[]", "ams1-web-2: pgBackRest's info is not the JSON expected ("),
    (info_json(1, [odd_backup(timestamp=None, database={"id": 1, "repo-key": 1})]),
     "ams1-web-2: pgBackRest's info has an entry this does not understand (KeyError('start'))"),
])
def test_an_unreadable_report_after_a_backup_does_not_stop_the_next_repository(fake: FakeHosts, io: Consoles,
                                                                                report: str, why: str) -> None:
    fake.answer(REPO1, "backup into repo1", report)
    fake.answer(REPO2, "backup into repo2", after_backup(2, "20261130-052101F"))
    assert take_backup(LAB, "full", (), io.out, io.err) == 0  # repo1 was backed up: only its report is unreadable
    assert fake.descriptions() == ["full backup into repo1", "full backup into repo2"]
    assert f"repo1 (ams1-web-2): {why}" in io.stderr
    assert io.stdout.splitlines() == [
        "repo1 (ams1-web-2): full backup no backup listed in 0.0 s",
        "repo2 (fra1-web-2): full backup 20261130-052101F, 40.0 MiB (stored 6.5 MiB) in 0.0 s",
    ]
    assert io.stderr.splitlines()[-1] == "2 of 2 repositories backed up in 0.0 s"
    assert fake.disconnected == 1


@pytest.mark.parametrize("wanted", ["repo3", "fra1-data-1", "REPO1", "ams1-web-1"])
def test_an_unknown_repository_is_refused_naming_the_repositories(fake: FakeHosts, io: Consoles,
                                                                  wanted: str) -> None:
    with pytest.raises(BackupError) as exc:
        take_backup(LAB, "full", ("repo1", wanted), io.out, io.err)
    assert str(exc.value) == (f"--repo {wanted}: not a repository; the repositories are ams1-web-2 (repo1), "
                              "fra1-web-2 (repo2)")
    assert fake.connected is None and fake.sent == []


def test_an_inventory_without_backup_hosts_is_refused(fake: FakeHosts, io: Consoles, tmp_path: Path) -> None:
    inv = tmp_path / "lab.yml"
    inv.write_text(LAB.read_text().replace("*web-backup}", "*web}"))
    with pytest.raises(BackupError, match="no host has the backup role: give it to two hosts"):
        take_backup(inv, "full", (), io.out, io.err)
    assert fake.connected is None


# --- deploykit backups ----------------------------------------------------------------------------------------

def test_backups_json_lists_each_repository_its_backups_and_range(fake: FakeHosts, io: Consoles,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    repositories_answer(fake)
    assert list_backups(LAB, True, io.out, io.err) == 0
    data = json.loads(capsys.readouterr().out)
    assert io.stdout == ""
    assert fake.descriptions() == ["read the repository"]
    assert fake.sent[0].commands == {REPO1: scripts.info(STANZA, 1), REPO2: scripts.info(STANZA, 2)}
    assert data == {
        "stanza": "chirp-lab",
        "repositories": [
            {"repo": 1, "host": "ams1-web-2", "provider": "leaseweb", "read": True, "status": "ok", "encrypted": True,
             "recoverable": {"from": "2026-11-28T01:01:07Z", "until": "2026-11-30T04:59:30Z"},
             "backups": [
                 {"label": "20261128-010002F", "type": "full", "start": "2026-11-28T01:00:02Z",
                  "stop": "2026-11-28T01:01:07Z", "size": 31457280, "stored": 4194304,
                  "wal": ["000000010000000000000003", "000000010000000000000003"]},
                 {"label": "20261128-010002F_20261129-010003D", "type": "diff", "start": "2026-11-29T01:00:03Z",
                  "stop": "2026-11-29T01:00:41Z", "size": 33554432, "stored": 1572864,
                  "wal": ["000000010000000000000021", "000000010000000000000021"]},
             ]},
            {"repo": 2, "host": "fra1-web-2", "provider": "hetzner", "read": True, "status": "ok", "encrypted": True,
             "recoverable": {"from": "2026-11-29T01:31:10Z", "until": "2026-11-30T04:59:31Z"},
             "backups": [
                 {"label": "20261129-013001F", "type": "full", "start": "2026-11-29T01:30:01Z",
                  "stop": "2026-11-29T01:31:10Z", "size": 31457280, "stored": 4718592,
                  "wal": ["000000010000000000000025", "000000010000000000000025"]},
             ]},
        ],
        "problems": [],
    }
    assert io.stderr.splitlines()[-1] == "read 2 of 2 repositories in 0.0 s"


def test_backups_json_with_an_unreachable_and_an_unreadable_repository(fake: FakeHosts, io: Consoles,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake.down = {REPO2: "unreachable: timed out"}
    fake.answer(REPO1, "read the repository", info_answer("ERROR: [055]: unable to load info file", ""))
    assert list_backups(LAB, True, io.out, io.err) == 1
    data = json.loads(capsys.readouterr().out)
    assert [(r["repo"], r["read"], r["status"], r["encrypted"], r["recoverable"], r["backups"])
            for r in data["repositories"]] == [(1, False, None, None, None, []), (2, False, None, None, None, [])]
    assert data["problems"][0] == "repo2 (fra1-web-2): unreachable: timed out"
    assert data["problems"][1].startswith("repo1 (ams1-web-2): ams1-web-2: pgBackRest's info is not the JSON "
                                          "expected (")
    assert fake.sent[0].hosts == [REPO1]  # the unreachable host was sent nothing
    assert "read 0 of 2 repositories" in io.stderr


def test_backups_as_tables_say_which_repository_is_not_encrypted(fake: FakeHosts, io: Consoles) -> None:
    repositories_answer(fake, repo2=info_answer(info_json(2, [REPO2_FULL], cipher="none"), REPO2_NEWEST_WAL))
    assert list_backups(LAB, False, io.out, io.err) == 0
    text = io.stdout
    assert "repo1 on ams1-web-2: ok, encrypted" in text
    assert "repo2 on fra1-web-2: ok, NOT ENCRYPTED" in text
    assert "recoverable: repo1 (ams1-web-2): 2026-11-28T01:01:07Z .. 2026-11-30T04:59:30Z" in text
    assert "recoverable: repo2 (fra1-web-2): 2026-11-29T01:31:10Z .. 2026-11-30T04:59:31Z" in text
    row = next(line for line in text.splitlines() if "20261128-010002F_20261129-010003D" in line)
    assert [cell.strip() for cell in row.split("│")[2:7]] == ["diff", "2026-11-29T01:00:03Z", "38 s", "32.0 MiB",
                                                              "1.5 MiB"]


def test_a_failed_read_is_a_problem_not_a_crash(fake: FakeHosts, io: Consoles) -> None:
    repositories_answer(fake)
    fake.answers[REPO2].insert(0, ("read the repository", False, "ERROR: [103]: unable to find a valid repository"))
    assert list_backups(LAB, False, io.out, io.err) == 1
    assert "repo1 on ams1-web-2" in io.stdout and "repo2 on" not in io.stdout
    assert ("repo2 (fra1-web-2): read the repository: ERROR: [103]: unable to find a valid repository"
            in io.stderr)


# --- deploykit restore: the whole cluster ---------------------------------------------------------------------

PATRONI_LIST = json.dumps([
    {"Cluster": STANZA, "Member": "ams1-data-1", "Host": "10.77.226.122:5432", "Role": "Sync Standby",
     "State": "streaming", "TL": 1, "Lag in MB": 0},
    {"Cluster": STANZA, "Member": "fra1-data-1", "Host": "10.77.167.178:5432", "Role": "Leader", "State": "running",
     "TL": 1},
    {"Cluster": STANZA, "Member": "rbx1-data-1", "Host": "10.77.236.233:5432", "Role": "Replica",
     "State": "streaming", "TL": 1, "Lag in MB": 0},
])
RESTORED = "last completed transaction was at log time 2026-11-29 11:59:58.417233+00\ntimeline 2\n"
SWITCH = "commit once and switch WAL on the leader"
WAL_STEP = f"WAL segment {SEGMENT} reaches the repositories"
# What a restore does before it asks for confirmation: nothing that changes the cluster (one empty commit).
BEFORE = {"ask Patroni who leads", SWITCH, WAL_STEP, "read the repository"}


def leader_answers(fake: FakeHosts) -> FakeHosts:
    """ams1-data-1 names fra1-data-1 as leader, whose WAL switch completes SEGMENT."""
    fake.answer("ams1-data-1", "ask Patroni who leads", PATRONI_LIST)
    fake.answer(LEADER, SWITCH, f"{SEGMENT}\n")
    return fake


@pytest.fixture
def cluster(fake: FakeHosts) -> FakeHosts:
    """Every host up, fra1-data-1 leads, both repositories hold backups."""
    leader_answers(fake)
    fake.answer(LEADER, "--target-action=promote", RESTORED)
    return repositories_answer(fake)


def nothing_changed(fake: FakeHosts) -> None:
    assert set(fake.descriptions()) <= BEFORE
    assert not any("systemctl stop patroni" in c or "systemctl start" in c or "rm -rf" in c
                   for c in fake.commands())
    assert fake.disconnected == (0 if fake.connected is None else 1)


def test_restore_stops_restores_and_starts_the_cluster_in_order(cluster: FakeHosts, io: Consoles) -> None:
    cluster.delays = {"--target-action=promote": 95.0, "cloned and replicate": 20.0}
    assert restore_cluster(LAB, "2026-11-29T13:00:00+01:00", (), True, io.out, io.err) == 0
    assert sorted(cluster.connected or []) == sorted([*MEMBERS, REPO1, REPO2])
    rest = {m: f"{MESH[m]}:8008" for m in MEMBERS}
    target = "2026-11-29 12:00:00.000000+00"
    assert [(s.description, s.commands) for s in cluster.sent] == [
        ("ask Patroni who leads", {"ams1-data-1": scripts.patroni_leader()}),
        (SWITCH, {LEADER: scripts.switch_wal(5432)}),
        (WAL_STEP, {REPO1: scripts.wait_wal(STANZA, SEGMENT), REPO2: scripts.wait_wal(STANZA, SEGMENT)}),
        ("read the repository", {REPO1: scripts.info(STANZA, 1), REPO2: scripts.info(STANZA, 2)}),
        ("stop Patroni on the replicas", {m: scripts.stop_patroni() for m in OTHERS}),
        ("stop Patroni on the leader", {LEADER: scripts.stop_patroni()}),
        ("remove the cluster from etcd", {LEADER: scripts.forget_cluster(STANZA, LEADER)}),
        # in both ranges: the first repository
        ("restore fra1-data-1 to the target, recover and promote",
         {LEADER: scripts.restore_member(STANZA, 1, DATA_DIR, target, 5432)}),
        ("set the replicas' data aside", {m: scripts.set_aside(DATA_DIR) for m in OTHERS}),
        ("start Patroni on fra1-data-1 (leader)", {LEADER: scripts.start_patroni()}),
        # Patroni's leader, and its PostgreSQL promoted (it takes writes) before anything is backed up from it
        ("fra1-data-1 leads", {LEADER: scripts.wait_role(rest[LEADER], "primary", 300) + " && "
                               + scripts.wait_writable(5432, 300)}),
        ("start Patroni on the replicas", {m: scripts.start_patroni() for m in OTHERS}),
        ("the replicas are cloned and replicate", {m: scripts.wait_role(rest[m], "replica", 1800) for m in OTHERS}),
        ("remove the replicas' old data", {m: scripts.drop_aside(DATA_DIR) for m in OTHERS}),
    ]
    assert cluster.disconnected == 1
    assert io.stdout.splitlines() == [
        "  last completed transaction was at log time 2026-11-29 11:59:58.417233+00",
        "  timeline 2",
        "restored chirp-lab to 2026-11-29T12:00:00Z from repo1 (ams1-web-2) in 115.0 s (command 115.0 s); "
        "leader fra1-data-1, replicas ams1-data-1, rbx1-data-1",
    ]
    assert ("restoring chirp-lab to 2026-11-29T12:00:00Z from repo1 (ams1-web-2) on fra1-data-1"
            in io.stderr)
    assert "  restore fra1-data-1 to the target, recover and promote: 95.0 s" in io.stderr.splitlines()


def test_restore_takes_the_repository_whose_range_holds_the_target(cluster: FakeHosts, io: Consoles) -> None:
    # 2026-11-28 12:00 is only in repo1's range: without --repo it is restored from there
    assert restore_cluster(LAB, "2026-11-28T12:00:00Z", (), True, io.out, io.err) == 0
    restore = cluster.step("restore fra1-data-1 to the target, recover and promote").commands[LEADER]
    assert restore == scripts.restore_member(STANZA, 1, DATA_DIR, "2026-11-28 12:00:00.000000+00", 5432)
    assert "from repo1 (ams1-web-2)" in io.stdout


@pytest.mark.parametrize(("wanted", "index"), [(("repo2",), 2), (("fra1-web-2",), 2), (("repo1",), 1)])
def test_with_repo_the_restore_chooses_among_the_named_but_reaches_and_reads_every_repository(
        cluster: FakeHosts, io: Consoles, wanted: tuple[str, ...], index: int) -> None:
    # 2026-11-29 12:00 is in both ranges: without --repo repo1 (the first) would be chosen
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", wanted, True, io.out, io.err) == 0
    assert sorted(cluster.connected or []) == sorted([*MEMBERS, REPO1, REPO2])
    assert cluster.step(WAL_STEP).hosts == [REPO1, REPO2]
    assert cluster.step("read the repository").hosts == [REPO1, REPO2]
    restore = cluster.step("restore fra1-data-1 to the target, recover and promote").commands[LEADER]
    assert restore == scripts.restore_member(STANZA, index, DATA_DIR, TARGET, 5432)
    host = {1: REPO1, 2: REPO2}[index]
    assert f"restored chirp-lab to 2026-11-29T12:00:00Z from repo{index} ({host})" in io.stdout


REBASE = "full backup of the restored cluster into repo{} (the newest was taken after the target)"


@pytest.mark.parametrize("wanted", [(), ("repo1",)])
def test_repositories_with_a_backup_after_the_target_get_a_new_full_before_replicas_clone(
        cluster: FakeHosts, io: Consoles, wanted: tuple[str, ...]) -> None:
    # 2026-11-28 12:00: repo1's diff (2026-11-29 01:00) and repo2's full (2026-11-29 01:30) lie on the timeline
    # the restore abandons; repo2 counts even when the restore is from repo1 (a replica may clone from it)
    assert restore_cluster(LAB, "2026-11-28T12:00:00Z", wanted, True, io.out, io.err) == 0
    steps = cluster.descriptions()
    assert steps[steps.index("fra1-data-1 leads") + 1:steps.index("start Patroni on the replicas")] == [
        REBASE.format(1), REBASE.format(2)]
    assert cluster.step(REBASE.format(1)).commands == {REPO1: scripts.backup(STANZA, 1, "full")}
    assert cluster.step(REBASE.format(2)).commands == {REPO2: scripts.backup(STANZA, 2, "full")}


def test_no_new_full_when_every_backup_predates_the_target(cluster: FakeHosts, io: Consoles) -> None:
    assert restore_cluster(LAB, "2026-11-30T02:00:00Z", (), True, io.out, io.err) == 0
    assert not any(d.startswith("full backup") for d in cluster.descriptions())


def test_a_backup_in_progress_at_the_target_also_gets_a_new_full(cluster: FakeHosts, io: Consoles) -> None:
    # repo1's diff ran from 2026-11-29 01:00:03 to 01:00:41: it ends past the target, on the abandoned timeline
    assert restore_cluster(LAB, "2026-11-29T01:00:20Z", ("repo1",), True, io.out, io.err) == 0
    steps = cluster.descriptions()
    assert steps[steps.index("fra1-data-1 leads") + 1:steps.index("start Patroni on the replicas")] == [
        REBASE.format(1), REBASE.format(2)]


@pytest.mark.parametrize(("text", "rebased"), [
    # repo1's diff ended at 2026-11-29 01:00:41, before the target; repo2's full ran 01:30:01 .. 01:31:10, after
    ("2026-11-29T01:15:00Z", [2]),
    ("2026-11-29T01:30:30Z", [2]),  # repo2's full began before the target and ended after it
    ("2026-11-29T01:31:10Z", []),  # a backup that ended exactly at the target does not lie past it
])
def test_only_repositories_with_a_backup_ending_after_the_target_get_a_new_full(cluster: FakeHosts, io: Consoles,
                                                                                 text: str, rebased: list[int]) -> None:
    assert restore_cluster(LAB, text, (), True, io.out, io.err) == 0
    assert [d for d in cluster.descriptions() if d.startswith("full backup")] == [REBASE.format(i) for i in rebased]


def test_a_failing_new_full_stops_before_the_replicas_clone(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answer(REPO1, REBASE.format(1), "ERROR: [082]: timeout", ok=False)
    with pytest.raises(BackupError, match=r"^full backup of the restored cluster into repo1 \(the newest was taken "
                                          r"after the target\) failed on ams1-web-2: "):
        restore_cluster(LAB, "2026-11-28T12:00:00Z", ("repo1",), True, io.out, io.err)
    assert "start Patroni on the replicas" not in cluster.descriptions()


@pytest.mark.parametrize(("answer", "why"), [
    ((False, "psql: error: connection refused"),
     "commit once and switch WAL on the leader: psql: error: connection refused"),
    ((True, "\n"), "no segment"),  # it succeeded but named no segment
    ((True, ""), "no segment"),
])
def test_a_leader_that_takes_no_commit_or_wal_switch_stops_the_restore_before_anything_changes(
        cluster: FakeHosts, io: Consoles, answer: tuple[bool, str], why: str) -> None:
    """Recovery stops only at a commit after the time: without one the restore would end the cluster's
    recovery short, so it is refused while nothing has changed yet."""
    cluster.answers[LEADER].insert(0, (SWITCH, *answer))
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert str(exc.value) == (f"fra1-data-1 (the leader) took no commit or WAL switch: {why}; nothing was changed "
                              "(recovery stops only at a commit after the time)")
    assert cluster.descriptions() == ["ask Patroni who leads", SWITCH]  # nothing waited for, read or stopped
    assert not any("systemctl stop patroni" in c for c in cluster.commands())
    assert "no WAL switch" not in io.stderr  # not the drill's warning: the restore does not go on
    nothing_changed(cluster)


def test_the_segment_waited_for_is_the_last_line_the_switch_printed(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answers[LEADER].insert(0, (SWITCH, True, f"WARNING: something\n{SEGMENT}\n"))
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err) == 0
    assert cluster.step(WAL_STEP).commands == {REPO1: scripts.wait_wal(STANZA, SEGMENT),
                                               REPO2: scripts.wait_wal(STANZA, SEGMENT)}


def test_restore_falls_back_to_a_repository_that_reaches_the_target(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answers[REPO1] = [("read the repository", True,
                               info_answer(info_json(1, [], status=(2, "no valid backups")), ""))]
    assert restore_cluster(LAB, "2026-11-30T02:00:00Z", (), True, io.out, io.err) == 0
    restore = cluster.step("restore fra1-data-1 to the target, recover and promote").commands[LEADER]
    assert "--repo=2 " in restore and "from repo2 (fra1-web-2)" in io.stdout


def test_restore_asks_another_member_when_the_first_names_no_leader(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answers["ams1-data-1"] = [("ask Patroni who leads", False, "connection refused")]
    cluster.answer("fra1-data-1", "ask Patroni who leads", PATRONI_LIST)
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err) == 0
    asked = [s.hosts for s in cluster.sent if s.description == "ask Patroni who leads"]
    assert asked == [["ams1-data-1"], ["fra1-data-1"]]


def test_with_no_leader_the_restore_goes_on_the_first_member_without_a_commit(fake: FakeHosts,
                                                                             io: Consoles) -> None:
    """Patroni stopped everywhere (a restore that stopped half-way): nobody to commit on; the first member is
    restored and initialises the cluster again."""
    repositories_answer(fake)
    fake.answer("fra1-data-1", "ask Patroni who leads", "not json")
    fake.answer("rbx1-data-1", "ask Patroni who leads", "[]")
    first, rest = MEMBERS[0], MEMBERS[1:]
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err) == 0
    assert [s.hosts for s in fake.sent if s.description == "ask Patroni who leads"] == [[m] for m in MEMBERS]
    assert fake.descriptions()[len(MEMBERS)] == "read the repository"  # no switch, nothing waited for
    assert not any(d == SWITCH or d.startswith("WAL segment") for d in fake.descriptions())
    assert f"no member leads (Patroni stopped?): the restore goes on {first}" in io.stderr
    assert "no member leads: the repositories hold what arrived before" in io.stderr
    assert fake.step("stop Patroni on the replicas").hosts == rest
    assert fake.step("remove the cluster from etcd").commands == {first: scripts.forget_cluster(STANZA, first)}
    assert fake.step(f"restore {first} to the target, recover and promote").hosts == [first]
    assert fake.step(f"{first} leads").hosts == [first]
    assert fake.step("the replicas are cloned and replicate").hosts == rest


def test_restore_is_refused_when_a_db_member_is_unreachable(cluster: FakeHosts, io: Consoles) -> None:
    cluster.down = {"rbx1-data-1": "unreachable: timed out"}
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert str(exc.value) == ("restore needs every db member reachable (rbx1-data-1 is not): a member left out "
                              "would come back later on the timeline the restore abandons")
    assert cluster.sent == []
    assert "rbx1-data-1: unreachable: timed out" in io.stderr
    nothing_changed(cluster)


def test_restore_is_refused_when_the_time_is_outside_every_range(cluster: FakeHosts, io: Consoles) -> None:
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-27T00:00:00Z", (), True, io.out, io.err)
    assert str(exc.value) == (
        "--time 2026-11-27T00:00:00Z is outside every recoverable range: "
        "repo1 (ams1-web-2): 2026-11-28T01:01:07Z .. 2026-11-30T04:59:30Z; "
        "repo2 (fra1-web-2): 2026-11-29T01:31:10Z .. 2026-11-30T04:59:31Z")
    assert cluster.descriptions() == ["ask Patroni who leads", SWITCH, WAL_STEP, "read the repository"]
    nothing_changed(cluster)


def test_restore_from_a_named_repository_outside_its_range_is_refused(cluster: FakeHosts, io: Consoles) -> None:
    # 2026-11-28 12:00 is in repo1's range only: named, repo2 does not reach it, and repo1 is not taken instead
    with pytest.raises(BackupError, match=r"^--time 2026-11-28T12:00:00Z is outside every recoverable range: .*"
                                          r"repo2 \(fra1-web-2\): 2026-11-29T01:31:10Z \.\. 2026-11-30T04:59:31Z$"):
        restore_cluster(LAB, "2026-11-28T12:00:00Z", ("fra1-web-2",), True, io.out, io.err)
    assert cluster.descriptions()[-1] == "read the repository"
    nothing_changed(cluster)


def test_a_refusal_with_repo_lists_only_the_named_repositories_ranges(cluster: FakeHosts, io: Consoles) -> None:
    # repo1's range holds the time, but it was not asked for: it is read (and waited for), not listed
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-28T12:00:00Z", ("fra1-web-2",), True, io.out, io.err)
    assert str(exc.value) == ("--time 2026-11-28T12:00:00Z is outside every recoverable range: "
                              "repo2 (fra1-web-2): 2026-11-29T01:31:10Z .. 2026-11-30T04:59:31Z")
    assert cluster.step("read the repository").hosts == [REPO1, REPO2]
    nothing_changed(cluster)


def test_a_refusal_with_repo_when_the_repository_asked_for_cannot_be_read(cluster: FakeHosts,
                                                                          io: Consoles) -> None:
    # repo2 is read and holds the time, but only repo1 was asked for, and it is unreachable
    cluster.down = {REPO1: "unreachable: timed out"}
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", ("repo1",), True, io.out, io.err)
    assert str(exc.value) == ("--time 2026-11-29T12:00:00Z is outside every recoverable range: no repository "
                              "asked for could be read")
    assert cluster.step("read the repository").hosts == [REPO2]
    nothing_changed(cluster)


UNREAD = " (if it holds a backup taken after the time, a replica must not be cloned from it: see docs/backups.md)"


def test_restore_with_every_repository_unreadable_says_so(cluster: FakeHosts, io: Consoles) -> None:
    cluster.down = {REPO1: "unreachable: timed out"}
    cluster.answers[REPO2] = [("read the repository", True, info_answer("garbage", ""))]
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert str(exc.value) == ("--time 2026-11-29T12:00:00Z is outside every recoverable range: no repository "
                              "asked for could be read")
    lines = io.stderr.splitlines()
    assert f"repo1 (ams1-web-2): unreachable: timed out{UNREAD}" in lines
    unreadable = [line for line in lines if line.startswith("repo2 (fra1-web-2): ")]
    assert len(unreadable) == 1
    assert unreadable[0].startswith("repo2 (fra1-web-2): fra1-web-2: pgBackRest's info is not the JSON expected (")
    assert unreadable[0].endswith(UNREAD)
    assert cluster.step(WAL_STEP).hosts == [REPO2]  # the unreachable repository is not waited for
    assert all(s.unreachable == [] for s in cluster.sent)
    nothing_changed(cluster)


def test_a_wal_segment_that_does_not_arrive_is_reported_and_the_ranges_still_read(cluster: FakeHosts,
                                                                                  io: Consoles) -> None:
    late = f"WAL segment {SEGMENT} did not arrive within 120 s"
    cluster.answers[REPO2].insert(0, (WAL_STEP, False, late))
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err) == 0
    assert f"repo2 (fra1-web-2): the newest WAL did not arrive: {WAL_STEP}: {late}" in io.stderr
    assert "repo1 (ams1-web-2): the newest WAL did not arrive" not in io.stderr
    assert cluster.step("read the repository").hosts == [REPO1, REPO2]


def test_restore_from_the_other_repository_when_one_repository_host_is_unreachable(cluster: FakeHosts,
                                                                                    io: Consoles) -> None:
    cluster.down = {REPO1: "unreachable: timed out"}
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err) == 0
    assert cluster.step(WAL_STEP).hosts == [REPO2]
    assert all(s.unreachable == [] for s in cluster.sent)  # nothing was even tried on the unreachable host
    assert cluster.step("read the repository").hosts == [REPO2]
    assert f"repo1 (ams1-web-2): unreachable: timed out{UNREAD}" in io.stderr.splitlines()
    restore = cluster.step("restore fra1-data-1 to the target, recover and promote").commands[LEADER]
    assert restore == scripts.restore_member(STANZA, 2, DATA_DIR, TARGET, 5432)


@pytest.mark.parametrize(("text", "as_utc"), [("2026-11-30T05:30:01Z", "2026-11-30T05:30:01Z"),
                                              ("2026-11-30 07:00:00+01:00", "2026-11-30T06:00:00Z"),
                                              ("2027-01-01T00:00:00Z", "2027-01-01T00:00:00Z")])
def test_restore_is_refused_when_the_time_is_in_the_future(fake: FakeHosts, io: Consoles, text: str,
                                                           as_utc: str) -> None:
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, text, (), True, io.out, io.err)
    assert str(exc.value) == f"--time {text}: that is in the future ({as_utc}; now 2026-11-30T05:30:00Z)"
    assert fake.connected is None
    nothing_changed(fake)


def test_a_drill_to_a_future_time_is_refused(fake: FakeHosts, io: Consoles) -> None:
    with pytest.raises(BackupError, match="that is in the future"):
        restore_drill(LAB, REPO1, "2026-11-30T06:00:00Z", None, False, io.out, io.err)
    assert fake.connected is None


@pytest.mark.parametrize(("text", "says"), [("2026-11-29T12:00:00", "has no time zone"),
                                            ("last tuesday", "is not a time")])
def test_restore_refuses_a_time_it_cannot_read_before_connecting(fake: FakeHosts, io: Consoles, text: str,
                                                                 says: str) -> None:
    with pytest.raises(BackupError, match=says):
        restore_cluster(LAB, text, (), True, io.out, io.err)
    assert fake.connected is None


def test_restore_not_confirmed_changes_nothing(cluster: FakeHosts, io: Consoles,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def no(text: str, **_: Any) -> bool:
        asked.append(text)
        return False

    monkeypatch.setattr(click, "confirm", no)
    assert restore_cluster(LAB, "2026-11-29T12:00:00Z", (), False, io.out, io.err) == 1
    assert asked == ["Restore chirp-lab to 2026-11-29T12:00:00Z from repo1 (ams1-web-2)? Patroni stops on "
                     "ams1-data-1, fra1-data-1, rbx1-data-1; fra1-data-1's data is restored, the others are cloned "
                     "again. Every write after 2026-11-29T12:00:00Z is gone from the cluster."]
    assert "not restored: nothing was changed" in io.stderr
    nothing_changed(cluster)


def test_a_failing_restore_step_names_the_step_and_stops(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answers[LEADER].insert(0, ("--target-action=promote", False,
                                       "ERROR: [075]: no backup set found to restore"))
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert str(exc.value) == (
        "restore fra1-data-1 to the target, recover and promote failed on fra1-data-1: restore fra1-data-1 to the "
        "target, recover and promote: ERROR: [075]: no backup set found to restore\n"
        "the cluster is down: fix the cause and run the restore again (docs/backups.md)")
    assert cluster.descriptions()[-1] == "restore fra1-data-1 to the target, recover and promote"
    assert not any("systemctl start" in c or "rm -rf" in c for c in cluster.commands())
    assert cluster.disconnected == 1


def test_a_leader_that_does_not_stop_says_how_to_go_back(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answer(LEADER, "stop Patroni on the leader", "Job for patroni.service canceled", ok=False)
    with pytest.raises(BackupError) as exc:
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert str(exc.value).splitlines()[0].startswith("stop Patroni on the leader failed on fra1-data-1: ")
    assert "start it again (`systemctl start patroni`)" in str(exc.value)
    assert cluster.descriptions()[-1] == "stop Patroni on the leader"


def test_a_replica_that_is_not_cloned_keeps_its_old_data(cluster: FakeHosts, io: Consoles) -> None:
    cluster.answer("rbx1-data-1", "cloned and replicate", "not a running replica after 1800 s", ok=False)
    with pytest.raises(BackupError, match="^the replicas are cloned and replicate failed on rbx1-data-1: "):
        restore_cluster(LAB, "2026-11-29T12:00:00Z", (), True, io.out, io.err)
    assert "remove the replicas' old data" not in cluster.descriptions()


# --- deploykit restore --into: a drill ------------------------------------------------------------------------

DRILLED = ("last completed transaction was at log time 2026-11-30 03:59:58.417233+00\n"
           f"{scripts.SEP}\n1042\n")


@pytest.mark.parametrize("host", ["fra1-data-1", "fra1-web-1", "nowhere-1"])
def test_a_drill_is_refused_on_a_host_that_is_not_a_backup_host(fake: FakeHosts, io: Consoles, host: str) -> None:
    with pytest.raises(BackupError) as exc:
        restore_drill(LAB, host, None, None, False, io.out, io.err)
    assert str(exc.value) == (f"--into {host}: not a backup host; a drill restores on a repository host from its "
                              "own repository, without touching the cluster (one of: ams1-web-2, fra1-web-2)")
    assert fake.connected is None


def test_a_drill_to_a_time_archives_the_newest_wal_restores_there_and_reports(fake: FakeHosts,
                                                                             io: Consoles) -> None:
    leader_answers(repositories_answer(fake))
    fake.answer(REPO2, "restore drill on", DRILLED)
    fake.delays = {"restore drill on": 42.5}
    query = "select count(*) from posts"
    assert restore_drill(LAB, REPO2, "2026-11-30T05:00:00+01:00", query, False, io.out, io.err) == 0
    assert sorted(fake.connected or []) == sorted([REPO2, *MEMBERS])
    assert [(s.description, s.commands) for s in fake.sent] == [
        # a commit after the target (for recovery to stop at), in this repository before it is read
        ("ask Patroni who leads", {"ams1-data-1": scripts.patroni_leader()}),
        (SWITCH, {LEADER: scripts.switch_wal(5432)}),
        (WAL_STEP, {REPO2: scripts.wait_wal(STANZA, SEGMENT)}),
        ("read the repository", {REPO2: scripts.info(STANZA, 2)}),
        ("restore drill on fra1-web-2",
         {REPO2: scripts.drill(STANZA, 2, "2026-11-30 04:00:00.000000+00", query, "chirp", False)}),
    ]
    assert io.stdout.splitlines() == [
        "restore drill on fra1-web-2 from repo2 (to 2026-11-30T04:00:00Z): 42.5 s; last transaction recovered at "
        "2026-11-30 03:59:58.417233+00",
        "query: select count(*) from posts",
        "1042",
    ]
    assert fake.disconnected == 1
    # the cluster is asked who leads and gets one commit and a WAL switch: nothing else; the other repository,
    # nothing at all
    assert {s.description for s in fake.sent if set(s.hosts) & set(MEMBERS)} == {"ask Patroni who leads", SWITCH}
    assert REPO1 not in {h for s in fake.sent for h in s.hosts}


def test_a_drill_to_the_newest_wal_archives_it_first_and_can_be_kept(fake: FakeHosts, io: Consoles) -> None:
    leader_answers(repositories_answer(fake))
    fake.answer(REPO1, "restore drill on", DRILLED.split(scripts.SEP)[0] + scripts.SEP + "\n")
    assert restore_drill(LAB, REPO1, None, None, True, io.out, io.err) == 0
    assert [(s.description, s.commands) for s in fake.sent] == [
        ("ask Patroni who leads", {"ams1-data-1": scripts.patroni_leader()}),
        (SWITCH, {LEADER: scripts.switch_wal(5432)}),
        (WAL_STEP, {REPO1: scripts.wait_wal(STANZA, SEGMENT)}),
        ("read the repository", {REPO1: scripts.info(STANZA, 1)}),
        ("restore drill on ams1-web-2", {REPO1: scripts.drill(STANZA, 1, None, None, "chirp", True)}),
    ]
    assert io.stdout.splitlines() == [
        "restore drill on ams1-web-2 from repo1 (to the newest WAL): 0.0 s; last transaction recovered at "
        "2026-11-30 03:59:58.417233+00",
        "kept running on ams1-web-2: runuser -u postgres -- psql -h /var/lib/postgresql/deploykit-drill -p 5499 "
        "-d chirp; stop it with: runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "
        "/var/lib/postgresql/deploykit-drill stop",
    ]


def test_a_drill_whose_wal_did_not_arrive_restores_what_arrived(fake: FakeHosts, io: Consoles) -> None:
    leader_answers(repositories_answer(fake))
    late = f"WAL segment {SEGMENT} did not arrive within 120 s"
    fake.answers[REPO1].insert(0, (WAL_STEP, False, late))
    fake.answer(REPO1, "restore drill on", f"{scripts.SEP}\n")
    assert restore_drill(LAB, REPO1, None, None, False, io.out, io.err) == 0
    assert f"repo1 (ams1-web-2): the newest WAL did not arrive: {WAL_STEP}: {late}" in io.stderr
    assert fake.descriptions()[-2:] == ["read the repository", "restore drill on ams1-web-2"]
    assert io.stdout.strip().endswith("last transaction recovered at unknown")


@pytest.mark.parametrize(("answer", "why"), [
    ((False, "psql: error: connection refused"),
     "commit once and switch WAL on the leader: psql: error: connection refused"),
    ((True, "\n"), "no segment named"),
])
def test_a_drill_whose_wal_switch_failed_restores_what_arrived(fake: FakeHosts, io: Consoles,
                                                               answer: tuple[bool, str], why: str) -> None:
    # unlike a restore, a drill only warns: it changes nothing in the cluster either way
    leader_answers(repositories_answer(fake))
    fake.answers[LEADER].insert(0, (SWITCH, *answer))
    assert restore_drill(LAB, REPO1, "2026-11-29T12:00:00Z", None, False, io.out, io.err) == 0
    assert fake.descriptions() == ["ask Patroni who leads", SWITCH, "read the repository",
                                   "restore drill on ams1-web-2"]
    assert f"fra1-data-1: no WAL switch ({why}): the repositories hold what arrived before" in io.stderr.splitlines()


def test_a_drill_with_no_leader_restores_what_arrived(fake: FakeHosts, io: Consoles) -> None:
    repositories_answer(fake)  # Patroni answers nothing a leader can be read from, on every member
    assert restore_drill(LAB, REPO2, None, None, False, io.out, io.err) == 0
    assert fake.descriptions() == ["ask Patroni who leads"] * 3 + ["read the repository",
                                                                  "restore drill on fra1-web-2"]
    assert [s.hosts for s in fake.sent[:3]] == [[m] for m in MEMBERS]
    assert "no member leads: the repositories hold what arrived before" in io.stderr


def test_a_drill_skips_unreachable_members_when_it_asks_who_leads(fake: FakeHosts, io: Consoles) -> None:
    fake.down = {"ams1-data-1": "unreachable: timed out", "rbx1-data-1": "unreachable: timed out"}
    fake.answer(LEADER, "ask Patroni who leads", PATRONI_LIST)
    fake.answer(LEADER, SWITCH, f"{SEGMENT}\n")
    repositories_answer(fake)
    assert restore_drill(LAB, REPO1, None, None, False, io.out, io.err) == 0
    assert [(s.description, s.hosts) for s in fake.sent] == [
        ("ask Patroni who leads", [LEADER]), (SWITCH, [LEADER]), (WAL_STEP, [REPO1]),
        ("read the repository", [REPO1]), ("restore drill on ams1-web-2", [REPO1])]
    assert all(s.unreachable == [] for s in fake.sent)
    assert "ams1-data-1: unreachable: timed out" in io.stderr


def test_a_drill_with_every_member_unreachable_restores_what_arrived(fake: FakeHosts, io: Consoles) -> None:
    fake.down = dict.fromkeys(MEMBERS, "unreachable: timed out")
    repositories_answer(fake)
    assert restore_drill(LAB, REPO1, None, None, False, io.out, io.err) == 0
    assert fake.descriptions() == ["read the repository", "restore drill on ams1-web-2"]
    assert "no member leads: the repositories hold what arrived before" in io.stderr


def test_a_drill_outside_the_repository_s_range_is_refused(fake: FakeHosts, io: Consoles) -> None:
    leader_answers(repositories_answer(fake))
    with pytest.raises(BackupError) as exc:
        restore_drill(LAB, REPO2, "2026-11-28T12:00:00Z", None, False, io.out, io.err)
    assert str(exc.value) == ("--time 2026-11-28T12:00:00Z is outside repo2 (fra1-web-2): 2026-11-29T01:31:10Z .. "
                              "2026-11-30T04:59:31Z")
    assert fake.descriptions() == ["ask Patroni who leads", SWITCH, WAL_STEP, "read the repository"]


def test_a_drill_on_an_unreachable_or_empty_repository_is_refused(fake: FakeHosts, io: Consoles) -> None:
    fake.down = {REPO1: "unreachable: timed out"}
    with pytest.raises(BackupError, match="^--into ams1-web-2: unreachable: timed out$"):
        restore_drill(LAB, REPO1, None, None, False, io.out, io.err)
    assert fake.sent == [] and fake.disconnected == 1


def test_a_drill_from_an_empty_repository_is_refused(fake: FakeHosts, io: Consoles) -> None:
    fake.answer(REPO1, "read the repository", info_answer(info_json(1, [], status=(2, "no valid backups")), ""))
    with pytest.raises(BackupError, match=r"^repo1 \(ams1-web-2\) has nothing to restore: no valid backups$"):
        restore_drill(LAB, REPO1, "2026-11-29T12:00:00Z", None, False, io.out, io.err)
    assert fake.descriptions()[-1] == "read the repository"
    assert "restore drill on ams1-web-2" not in fake.descriptions()


@pytest.mark.parametrize(("answer", "says"), [
    ((False, "ERROR: [103]: unable to find a valid repository"),
     "repo1 (ams1-web-2): read the repository: ERROR: [103]: unable to find a valid repository"),
    ((True, info_answer("garbage", "")), "repo1 (ams1-web-2): ams1-web-2: pgBackRest's info is not the JSON "
                                         "expected ("),
])
def test_a_drill_from_a_repository_that_cannot_be_read_is_refused_naming_it(fake: FakeHosts, io: Consoles,
                                                                            answer: tuple[bool, str],
                                                                            says: str) -> None:
    fake.answers[REPO1] = [("read the repository", *answer)]
    with pytest.raises(BackupError) as exc:
        restore_drill(LAB, REPO1, None, None, False, io.out, io.err)
    assert str(exc.value).startswith(says)
    assert "restore drill on ams1-web-2" not in fake.descriptions()
    assert fake.disconnected == 1


def test_a_failing_drill_names_its_step(fake: FakeHosts, io: Consoles) -> None:
    repositories_answer(fake)
    fake.answer(REPO1, "restore drill on", "PostgreSQL stopped during recovery:", ok=False)
    with pytest.raises(BackupError, match="^restore drill on ams1-web-2 failed on ams1-web-2: restore drill on "
                                          "ams1-web-2: PostgreSQL stopped during recovery:$"):
        restore_drill(LAB, REPO1, "2026-11-29T12:00:00Z", None, False, io.out, io.err)
    assert fake.disconnected == 1


# --- the command line -----------------------------------------------------------------------------------------

def flat(text: str) -> str:
    return " ".join(text.split())


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    assert isinstance(exc.value.code, int)
    return exc.value.code, captured.out, captured.err


def test_restore_without_time_or_into_is_refused(fake: FakeHosts) -> None:
    result = CliRunner().invoke(cli, ["restore", str(LAB)])
    assert result.exit_code != 0
    assert isinstance(result.exception, BackupError)
    assert str(result.exception) == ("restore needs --time (the point in time to restore the cluster to), or --into "
                                     "HOST for a drill; `deploykit backups INVENTORY` shows what is recoverable")
    assert fake.connected is None


def test_restore_without_time_or_into_through_the_entry_point(capsys: pytest.CaptureFixture[str],
                                                              fake: FakeHosts) -> None:
    code, out, err = run_main(capsys, "restore", str(LAB))
    assert code == ExitCode.ERROR and out == ""
    assert flat(err) == ("error: restore needs --time (the point in time to restore the cluster to), or --into HOST "
                         "for a drill; `deploykit backups INVENTORY` shows what is recoverable")
    assert "Traceback" not in err


@pytest.mark.parametrize("extra", [["--query", "select 1"], ["--keep"], ["--time", "2026-11-29T12:00:00Z", "--keep"]])
def test_query_and_keep_without_into_are_refused(fake: FakeHosts, extra: list[str]) -> None:
    result = CliRunner().invoke(cli, ["restore", str(LAB), *extra])
    assert result.exit_code != 0 and isinstance(result.exception, BackupError)
    assert str(result.exception) == "--query and --keep go with --into HOST (a restore drill)"
    assert fake.connected is None


@pytest.mark.parametrize("extra", [["--repo", "repo1"], ["--repo", "fra1-web-2", "--time", "2026-11-29T12:00:00Z"]])
def test_repo_with_into_is_refused(fake: FakeHosts, monkeypatch: pytest.MonkeyPatch, extra: list[str]) -> None:
    drilled: list[Any] = []
    monkeypatch.setattr(operations, "restore_drill", lambda *args: drilled.append(args) or 0)
    result = CliRunner().invoke(cli, ["restore", str(LAB), "--into", "fra1-web-2", *extra])
    assert result.exit_code != 0 and isinstance(result.exception, BackupError)
    assert str(result.exception) == ("--repo does not go with --into: a drill restores from the backup host's own "
                                     "repository (name the host of the repository to drill with --into)")
    assert drilled == [] and fake.connected is None


def test_repo_with_into_through_the_entry_point(capsys: pytest.CaptureFixture[str], fake: FakeHosts) -> None:
    code, out, err = run_main(capsys, "restore", str(LAB), "--into", "fra1-web-2", "--repo", "repo1")
    assert code == ExitCode.ERROR and out == ""
    assert flat(err).startswith("error: --repo does not go with --into: ")
    assert "Traceback" not in err and fake.connected is None


def test_the_commands_pass_their_options_on(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[Any, ...]]] = []

    def recorder(name: str, code: int) -> Any:
        def record(*args: Any) -> int:
            calls.append((name, args[:-2]))  # without the consoles
            return code

        return record

    monkeypatch.setattr(operations, "take_backup", recorder("backup", 0))
    monkeypatch.setattr(operations, "list_backups", recorder("backups", 1))
    monkeypatch.setattr(operations, "restore_cluster", recorder("restore", 0))
    monkeypatch.setattr(operations, "restore_drill", recorder("drill", 0))
    runner = CliRunner()
    assert runner.invoke(cli, ["backup", str(LAB)]).exit_code == 0
    assert runner.invoke(cli, ["backup", str(LAB), "--type", "diff", "--repo", "repo2", "--repo",
                               "ams1-web-2"]).exit_code == 0
    assert runner.invoke(cli, ["backups", str(LAB), "--json"]).exit_code == 1
    assert runner.invoke(cli, ["restore", str(LAB), "--time", "2026-11-29T12:00:00Z", "--repo", "repo1",
                               "-y"]).exit_code == 0
    assert runner.invoke(cli, ["restore", str(LAB), "--into", "fra1-web-2", "--query", "select 1",
                               "--keep"]).exit_code == 0
    assert calls == [
        ("backup", (LAB, "full", ())),
        ("backup", (LAB, "diff", ("repo2", "ams1-web-2"))),
        ("backups", (LAB, True)),
        ("restore", (LAB, "2026-11-29T12:00:00Z", ("repo1",), True)),
        ("drill", (LAB, "fra1-web-2", None, "select 1", True)),
    ]
    bad = runner.invoke(cli, ["backup", str(LAB), "--type", "weekly"])
    assert bad.exit_code == 2 and "weekly" in bad.output
    missing = runner.invoke(cli, ["backups", "no-such-inventory.yml"])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_a_backup_error_is_one_line_and_exit_1_through_the_entry_point(capsys: pytest.CaptureFixture[str],
                                                                      fake: FakeHosts) -> None:
    code, _, err = run_main(capsys, "backup", str(LAB), "--repo", "repo9")
    assert code == ExitCode.ERROR
    assert flat(err) == ("error: --repo repo9: not a repository; the repositories are ams1-web-2 (repo1), "
                         "fra1-web-2 (repo2)")
    assert isinstance(BackupError("x"), DeploykitError)


@pytest.mark.parametrize("args", [["backup", "inv.yml"], ["backups", "--json", "inv.yml"],
                                  ["restore", "inv.yml", "--time", "2026-11-30T05:40:00Z"],
                                  ["--debug", "restore", "--into", "fra1-web-2", "inv.yml"]])
def test_the_backup_commands_connect_so_they_get_gevent(args: list[str]) -> None:
    assert {"backup", "backups", "restore"} <= entry.CONNECTING
    assert entry.needs_gevent(args) is True


def test_pure_commands_still_skip_gevent() -> None:
    assert entry.needs_gevent(["validate", "inv.yml"]) is False
    assert entry.needs_gevent(["plan", "--offline", "inv.yml"]) is False
