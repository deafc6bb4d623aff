"""The changes of one role on one host as an ordered list of steps: uploads and shell commands.

Commands are data (exact strings, unit-tested). Order inside a role: packages (services kept from
starting by policy-rc.d until configured), masks, directories, files (each uploaded beside its target,
checked by its own tool, then renamed over the live file, so a failed check or an interrupted run never
leaves a half-written config live), after-change commands, daemon-reload, services, waits.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from deploykit.execute.diff import RoleChanges
from deploykit.plan.desired import ManagedFile

CANDIDATE_SUFFIX = ".deploykit-new"


@dataclass(frozen=True)
class Shell:
    description: str
    command: str


@dataclass(frozen=True)
class Upload:
    description: str
    dest: str
    content: str
    mode: str
    owner: str
    group: str


Step = Shell | Upload


@dataclass
class HostOutcome:
    """How one host's steps went (the executor's answer, or a fake executor's in the unit tests)."""

    ok: bool = True
    error: str = ""
    steps_done: int = 0
    # False: the host was not sent its steps at all (a rollout stopped before it); it runs what it ran before.
    attempted: bool = True
    output: str = ""  # what the last step that ran printed (stdout): commands that report (backups, restore)


POLICY_RC = "/usr/sbin/policy-rc.d"
APT_STAMP = "/var/lib/deploykit/apt-updated"  # touched after each successful `apt-get update`
APT_LISTS_MAX_AGE_MIN = 60  # package lists younger than this (and than the apt sources) are not fetched again
APT_LOCK_WAIT_S = 600  # a provider's unattended-upgrades may hold apt's locks for minutes on a fresh server

# A server fresh from a provider: its package lists may be missing or stale, apt's locks may be held by
# unattended-upgrades (wait for them, never fail at once), mirrors fail transiently (apt retries), and packages
# must not start their services before deploykit configured them (policy-rc.d answers "not now" meanwhile).
# On failure the last lines apt itself wrote (its `E:`/`Err:` lines) are what the host reports.
INSTALL_SCRIPT = """\
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
policy={policy}; stamp={stamp}; log=$(mktemp)
apt_get() {{
  deadline=$(( $(date +%s) + {lock_wait} ))
  until apt-get -o DPkg::Lock::Timeout=60 -o Acquire::Retries=3 "$@" >"$log" 2>&1; do
    rc=$?
    grep -q 'Could not get lock' "$log" || return $rc
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "deploykit: gave up after {lock_wait} s waiting for apt's lock, held by another apt" >>"$log"
      return $rc
    fi
    sleep {lock_retry}
  done
}}
update() {{ apt_get update -qq && mkdir -p "$(dirname "$stamp")" && touch "$stamp"; }}
printf '#!/bin/sh\\nexit 101\\n' > "$policy" && chmod 755 "$policy"
if [ -z "$(find "$stamp" -mmin -{max_age} -newer /etc/apt/sources.list.d 2>/dev/null)" ]; then update; fi &&
  {{ apt_get install -y -qq --no-install-recommends {packages} ||
     {{ update && apt_get install -y -qq --no-install-recommends {packages}; }}; }}
rc=$?
rm -f "$policy"
if [ $rc -ne 0 ]; then
  grep -E '^(E:|Err:|deploykit:)' "$log" | tail -3 >&2 || tail -3 "$log" >&2
fi
rm -f "$log"
exit $rc"""


def install_packages(packages: tuple[str, ...], *, policy_rc: str = POLICY_RC, stamp: str = APT_STAMP,
                     lock_wait_s: int = APT_LOCK_WAIT_S, lock_retry_s: int = 5) -> str:
    """The command that installs `packages` (the paths and the wait are parameters for the tests only).

    The package lists are fetched when older than APT_LISTS_MAX_AGE_MIN or than the apt sources, and once more
    when an install fails with lists that were thought fresh (a mirror that moved on)."""
    return INSTALL_SCRIPT.format(policy=shlex.quote(policy_rc), stamp=shlex.quote(stamp), lock_wait=lock_wait_s,
                                 lock_retry=lock_retry_s,
                                 max_age=APT_LISTS_MAX_AGE_MIN, packages=" ".join(shlex.quote(p) for p in packages))


def role_steps(changes: RoleChanges, *, run_once: bool = False) -> list[Step]:
    q = shlex.quote
    steps: list[Step] = []
    # Files that must be in place before the packages are installed (e.g. postgresql-common's createcluster.d,
    # so that installing postgresql-15 never creates Debian's default cluster).
    for change in changes.files:
        if change.file.before_install and change.content_changes:
            steps += _install_file_steps(change.file)
    if changes.packages:
        steps.append(Shell(f"install {', '.join(changes.packages)}", install_packages(changes.packages)))
    for unit in changes.masks:
        steps.append(Shell(f"mask {unit}", f"systemctl mask --now {q(unit)}"))
    for d in changes.directories:
        steps.append(Shell(f"directory {d.path}",
                           f"install -d -m {d.mode} -o {q(d.owner)} -g {q(d.group)} {q(d.path)}"))
    reload_units = False
    for change in changes.files:
        f = change.file
        if change.action == "metadata":
            steps.append(Shell(f"mode/owner of {f.path}",
                               f"chown {q(f.owner)}:{q(f.group)} {q(f.path)} && chmod {f.mode} {q(f.path)}"))
            continue
        if not f.before_install:
            steps += _install_file_steps(f)
        if f.path.startswith(("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")):
            reload_units = True
    for change in changes.files:
        if change.content_changes and change.file.after_change:
            steps.append(Shell(f"apply {change.file.path}", change.file.after_change))
    if reload_units:
        steps.append(Shell("systemd daemon-reload", "systemctl daemon-reload"))
    if run_once and changes.once and not changes.empty:
        steps.append(Shell(f"once per deploy: {changes.once}", changes.once))
    if changes.prepare and not changes.empty:
        steps.append(Shell(f"prepare {changes.role}", changes.prepare))
    for svc in changes.services:
        for action in svc.actions:
            steps.append(Shell(f"{action} {svc.name}", f"systemctl {action} {q(svc.name)}"))
    if not changes.empty:
        for wait in changes.waits:
            steps.append(Shell(f"wait: {wait.description}", wait_command(wait.command, wait.timeout_s)))
    return steps


def _install_file_steps(f: ManagedFile) -> list[Step]:
    """Upload beside the target, check, rename over the live file."""
    steps: list[Step] = [Upload(f"upload {f.path}", f.path + CANDIDATE_SUFFIX, f.content, f.mode, f.owner, f.group),
                         Shell(f"check and install {f.path}", install_file(f.path, f.validate))]
    return steps


def install_file(path: str, validate: str | None) -> str:
    """Check the uploaded candidate with the service's own tool, then rename it over the live file."""
    q = shlex.quote
    candidate = path + CANDIDATE_SUFFIX
    move = f"mv -f {q(candidate)} {q(path)}"
    if not validate:
        return move
    check = validate.format(path=q(candidate))
    # the check runs in a subshell: an `exit` inside it must not end the whole command before the rename
    return (f"if ( {check} ); then {move}; else rc=$?; rm -f {q(candidate)}; "
            f"echo 'deploykit: {path} failed its check; the live file is unchanged' >&2; exit $rc; fi")


def wait_command(command: str, timeout_s: int) -> str:
    return (f"deadline=$(( $(date +%s) + {timeout_s} )); "
            f"until ( {command} ) >/dev/null 2>&1; do "
            f"if [ $(date +%s) -ge $deadline ]; then echo 'timed out after {timeout_s}s' >&2; "
            f"( {command} ) 2>&1 | tail -5 >&2; exit 1; fi; sleep 1; done")
