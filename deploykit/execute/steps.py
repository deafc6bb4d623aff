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
from deploykit.execute.probe import SEED_DIR, seed_marker, sha256

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


def install_packages(packages: tuple[str, ...]) -> str:
    pkgs = " ".join(shlex.quote(p) for p in packages)
    return (
        "export DEBIAN_FRONTEND=noninteractive; "
        "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d; "
        "apt-get update -qq && "
        f"apt-get install -y -qq --no-install-recommends {pkgs}; rc=$?; "
        "rm -f /usr/sbin/policy-rc.d; exit $rc"
    )


def role_steps(changes: RoleChanges, *, run_once: bool = False) -> list[Step]:
    q = shlex.quote
    steps: list[Step] = []
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
        candidate = f.path + CANDIDATE_SUFFIX
        steps.append(Upload(f"upload {f.path}", candidate, f.content, f.mode, f.owner, f.group))
        steps.append(Shell(f"check and install {f.path}", install_file(f.path, f.validate)))
        if f.seed:
            marker = seed_marker(f.path)
            steps.append(Shell(f"record seed of {f.path}",
                               f"mkdir -p {SEED_DIR} && echo {sha256(f.content)} > {q(marker)}"))
        if f.path.startswith(("/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/")):
            reload_units = True
    for change in changes.files:
        if change.content_changes and change.file.after_change:
            steps.append(Shell(f"apply {change.file.path}", change.file.after_change))
    if reload_units:
        steps.append(Shell("systemd daemon-reload", "systemctl daemon-reload"))
    if run_once and changes.once and not changes.empty:
        steps.append(Shell(f"once per deploy: {changes.once}", changes.once))
    for svc in changes.services:
        for action in svc.actions:
            steps.append(Shell(f"{action} {svc.name}", f"systemctl {action} {q(svc.name)}"))
    if not changes.empty:
        for wait in changes.waits:
            steps.append(Shell(f"wait: {wait.description}", wait_command(wait.command, wait.timeout_s)))
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
