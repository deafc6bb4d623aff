"""The shell the backup commands run on the hosts (commands as data: exact strings, unit-tested). Each is
idempotent where it can be and prints what the command reports; operations.py runs them in order."""

from __future__ import annotations

import shlex

from deploykit.services.backup.config import pgbackrest
from deploykit.services.backup.placement import REPO_PATH
from deploykit.services.db.config import CONFIG_PATH as PATRONI_CONFIG
from deploykit.services.db.config import PG_VERSION

PG_CTL = f"/usr/lib/postgresql/{PG_VERSION}/bin/pg_ctl"
PSQL = "/usr/bin/psql"
DRILL_DIR = "/var/lib/postgresql/deploykit-drill"
DRILL_PORT = 5499
SEP = "@@deploykit@@"  # between the parts of one command's output
BACKUP_TYPES = ("full", "diff", "incr")
ASIDE = ".before-restore"  # a member's data directory, set aside until the restored cluster stands


def backup(stanza: str, repo: int, kind: str) -> str:
    """Take a backup into this host's repository now (pgBackRest finds the primary), then report it."""
    log = "/tmp/deploykit-backup.log"
    return (f"if ! {pgbackrest(stanza, f'--repo={repo}', f'--type={kind}', '--log-level-console=info', 'backup')}"
            f" >{log} 2>&1; then tail -n 15 {log} >&2; exit 1; fi; "
            f"{pgbackrest(stanza, f'--repo={repo}', '--output=json', 'info')}")


def info(stanza: str, repo: int) -> str:
    """pgBackRest's info (JSON), then the time the newest WAL segment reached this repository (epoch s):
    the end of the recoverable range, to within one segment."""
    wal = f"{REPO_PATH}/archive/{stanza}"
    return (f"{pgbackrest(stanza, f'--repo={repo}', '--output=json', 'info')} && echo {SEP} && "
            f"{{ find {wal} -type f -name '????????????????????????-*' ! -name '*.tmp' -printf '%T@\\n' 2>/dev/null "
            "| sort -n | tail -n 1; true; }")


def switch_wal(port: int) -> str:
    """On the primary: one committed transaction, then a switch to a new WAL segment; prints the name of the
    segment just completed (it holds that commit). Recovery to a time stops only at a commit later than the
    time, so an idle database gets one; and everything committed so far is then in a segment to archive.
    (pgBackRest's `check` does the switch too, but fails outright when any member is unreachable.)"""
    sql = f"runuser -u postgres -- {PSQL} -XAtq -p {port} -d postgres -c"
    return (f"{sql} 'select pg_current_xact_id()' >/dev/null && "
            f"{sql} 'select pg_walfile_name(pg_switch_wal())'")


def wait_wal(stanza: str, segment: str, timeout_s: int = 120) -> str:
    """On a repository host: until WAL segment `segment` has arrived in this host's repository."""
    wal = f"{REPO_PATH}/archive/{stanza}"
    # pgBackRest writes a file under a .tmp name and renames it once complete: only the complete one counts.
    return (f"seg={shlex.quote(segment)}; deadline=$(( $(date +%s) + {timeout_s} )); "
            f"until find {wal} -type f -name \"$seg-*\" ! -name '*.tmp' 2>/dev/null | grep -q .; do "
            f"[ \"$(date +%s)\" -lt \"$deadline\" ] || {{ echo \"WAL segment $seg did not arrive within "
            f"{timeout_s} s\" >&2; exit 1; }}; sleep 1; done")


def patroni_leader() -> str:
    """This member's view of who leads (patronictl's JSON list)."""
    return f"patronictl -c {PATRONI_CONFIG} list -f json"


def stop_patroni() -> str:
    return "systemctl stop patroni && ! systemctl is-active --quiet patroni"


def forget_cluster(scope: str, leader: str) -> str:
    """Remove the cluster's keys from etcd (patronictl asks three questions: the name, the phrase, and, while
    a leader key lives, the leader's name). The restored member then initialises it again from its data."""
    answers = shlex.quote(f"{scope}\nYes I am aware\n{leader}\n")
    return (f"printf %s {answers} | patronictl -c {PATRONI_CONFIG} remove {shlex.quote(scope)} >/dev/null && "
            f"! patronictl -c {PATRONI_CONFIG} list -f json | grep -q '\"Member\"'")


def recover(ctl: str, sql: str, log: str) -> tuple[str, ...]:
    """Start a restored PostgreSQL (`ctl`: its pg_ctl, `sql`: psql on it) and wait until it has recovered to
    its target and promoted (at most an hour; a PostgreSQL that stops meanwhile is reported with its log's
    last lines); then print the last transaction it recovered, as its log says."""
    return (
        f"{ctl} -l {log} -w -t 3600 start >/dev/null",
        "deadline=$(( $(date +%s) + 3600 ))",
        f"until [ \"$({sql} 'select pg_is_in_recovery()' 2>/dev/null)\" = f ]; do",
        f"  if ! {ctl} status >/dev/null 2>&1; then echo 'PostgreSQL stopped during recovery:' >&2; "
        f"tail -n 8 {log} >&2; exit 1; fi",
        "  [ \"$(date +%s)\" -lt \"$deadline\" ] || { echo 'recovery did not finish within an hour' >&2; exit 1; }",
        "  sleep 1",
        "done",
        f"grep -o 'last completed transaction was at log time .*' {log} | tail -n 1 || true",
    )


def restore_member(stanza: str, repo: int, data_dir: str, target: str, port: int) -> str:
    """Restore this member's data directory to `target` (a time) from repository `repo`, start PostgreSQL
    outside Patroni until it has recovered to the target and promoted, then stop it cleanly."""
    log = "/var/log/postgresql/deploykit-restore.log"
    restore = pgbackrest(stanza, f"--repo={repo}", "--delta", "--type=time", f"--target={shlex.quote(target)}",
                         "--target-action=promote", "--log-level-console=warn", "restore")
    ctl = f"runuser -u postgres -- {PG_CTL} -D {data_dir}"
    sql = f"runuser -u postgres -- {PSQL} -XAtq -h /var/run/postgresql -p {port} -d postgres -c"
    return "\n".join((
        "set -e",
        f"{restore}",
        f": > {log} && chown postgres:postgres {log}",
        *recover(ctl, sql, log),
        f"{sql} 'select timeline_id from pg_control_checkpoint()' | sed 's/^/timeline /'",
        f"{ctl} -m fast -w stop >/dev/null",
    ))


def set_aside(data_dir: str) -> str:
    """A member that is not restored is cloned again: its data directory goes aside (kept until the
    restored cluster stands, then removed by `drop_aside`). Run again (a restore run again after this step),
    the copy already aside is kept and what a clone began is removed."""
    aside = f"{data_dir}{ASIDE}"
    return (f"if [ -d {aside} ]; then rm -rf {data_dir}; elif [ -d {data_dir} ]; then mv {data_dir} {aside}; fi")


def drop_aside(data_dir: str) -> str:
    return f"rm -rf {data_dir}{ASIDE}"


def start_patroni() -> str:
    return "systemctl start patroni"


def wait_role(rest: str, role: str, timeout_s: int) -> str:
    """Until this member's Patroni answers 200 on /primary or /replica."""
    return (f"deadline=$(( $(date +%s) + {timeout_s} )); "
            f"until curl -fsS -o /dev/null -m 3 http://{rest}/{role}; do "
            f"[ \"$(date +%s)\" -lt \"$deadline\" ] || {{ echo 'not a running {role} after {timeout_s} s' >&2; "
            "exit 1; }; sleep 1; done")


def wait_writable(port: int, timeout_s: int) -> str:
    """Until this member's PostgreSQL takes writes (Patroni says "primary" as soon as it holds the leader key,
    while PostgreSQL may still be finishing its promotion)."""
    sql = f"runuser -u postgres -- {PSQL} -XAtq -p {port} -d postgres -c 'select pg_is_in_recovery()'"
    return (f"deadline=$(( $(date +%s) + {timeout_s} )); "
            f"until [ \"$({sql} 2>/dev/null)\" = f ]; do "
            f"[ \"$(date +%s)\" -lt \"$deadline\" ] || {{ echo 'PostgreSQL still read-only after {timeout_s} s' >&2; "
            "exit 1; }; sleep 1; done")


def drill(stanza: str, repo: int, target: str | None, query: str | None, database: str, keep: bool) -> str:
    """Restore into a scratch data directory on this repository host and start it there, local only and
    archiving nothing (the cluster is not touched); report the last transaction recovered and `query`."""
    d, log = DRILL_DIR, f"{DRILL_DIR}/drill.log"
    local = ("--reset-pg1-host", f"--pg1-path={d}")
    kind = ("--type=time", f"--target={shlex.quote(target)}", "--target-action=promote") if target else ()
    restore = pgbackrest(stanza, f"--repo={repo}", *local, *kind, "--log-level-console=warn", "restore")
    get = f"/usr/bin/pgbackrest --stanza={stanza} --repo={repo} {' '.join(local)} archive-get %f \"%p\""
    settings = (
        "# restore drill (deploykit): local only, archives nothing, applied after the restored settings",
        f"port = {DRILL_PORT}", "listen_addresses = ''", f"unix_socket_directories = '{d}'",
        "archive_mode = off", "hot_standby = on", "synchronous_standby_names = ''", "primary_conninfo = ''",
        f"hba_file = '{d}/pg_hba.conf'", f"ident_file = '{d}/pg_ident.conf'", "cluster_name = 'deploykit-drill'",
        f"restore_command = '{get}'",
    )
    ctl = f"runuser -u postgres -- {PG_CTL} -D {d}"
    sql = f"runuser -u postgres -- {PSQL} -XAtq -h {d} -p {DRILL_PORT} -d postgres -c"
    lines = [
        "set -e",
        f"{ctl} -m immediate stop >/dev/null 2>&1 || true",
        f"rm -rf {d} && install -d -o postgres -g postgres -m 0700 {d}",
        restore,
        f"printf '%s\\n' {' '.join(shlex.quote(s) for s in settings)} >> {d}/postgresql.auto.conf",
        *recover(ctl, sql, log),
        f"echo {SEP}",
    ]
    if query:
        lines.append(f"runuser -u postgres -- {PSQL} -XAt -F ' | ' -h {d} -p {DRILL_PORT} -d {database} "
                     f"-c {shlex.quote(query)}")
    if not keep:
        lines += [f"{ctl} -m fast -w stop >/dev/null", f"rm -rf {d}"]
    return "\n".join(lines)
