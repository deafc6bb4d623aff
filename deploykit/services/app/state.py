"""Roles app and worker: the app's code, its env file and its systemd units (gunicorn; the worker).

One host's app processes share the code and the env file, so one RoleState covers both roles on a host:
`desired_app` on a host with the app role (its web unit, and the worker unit if the host is also a worker),
`desired_worker` on a worker-only host. A change of code or env file restarts every unit on the host that
runs it; the executor restarts app hosts `services.app.batch_size` at a time and runs `release_command`
once per deploy on one app host.

The code travels as one managed file per source file, so a file removed from the source would stay on the
hosts: a manifest (`<install_dir>.files`, one path per line) lists the files deploykit puts in the install
directory and is written after them. When it changes, its `after_change` removes every file listed in the
manifest of the last release (`.applied`, its copy) that the new one no longer lists, and the directories
that leaves empty, then records the new one; nothing else on the host is touched. A host deployed before
there was a manifest has no `.applied`: the install directory's own listing stands in for it once (it is
deploykit's alone: root-owned, the app runs as its own user). The manifest changes only when the set of
files does, so a no-op apply reports nothing.
"""

from __future__ import annotations

import re
import shlex

from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit, Wait
from deploykit.secret import Secret
from deploykit.services.app.config import AppHostConfig
from deploykit.services.render import render

PACKAGES = ("gunicorn", "python3-flask", "python3-psycopg2", "python3-redis", "curl")
UNQUOTED = re.compile(r"^[A-Za-z0-9_.,:/@+=-]*$")


def env_value(value: str | Secret) -> str:
    """A value for a systemd EnvironmentFile: bare when safe, else double-quoted with \\ and " escaped."""
    text = value.reveal() if isinstance(value, Secret) else value
    if UNQUOTED.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def units(cfg: AppHostConfig) -> tuple[str, ...]:
    """The long-running units this host runs."""
    return (cfg.web_unit,) * cfg.runs_web + (cfg.worker_unit,) * bool(cfg.runs_worker and cfg.worker_command)


def release_command(cfg: AppHostConfig) -> str | None:
    """What the executor runs once per deploy on one app host, after the new code is in place."""
    return f"systemctl start {cfg.release_unit}.service" if cfg.runs_web and cfg.release_command else None


# Run after a changed manifest is in place (the new files already are), before the units restart. A failed
# clean-up removes the manifest, so that the next apply writes it again and retries.
REMOVE_STALE_SCRIPT = """\
cd {install_dir} || exit 1
{{ if [ -f {applied} ]; then cat {applied}; else find . ! -type d | sed 's|^\\./||'; fi; }} |
  grep -vxF -f {manifest} | while IFS= read -r f; do
    case $f in ''|'#'*) continue ;; esac
    if [ -f "$f" ] || [ -L "$f" ]; then rm -f -- "$f" || exit 1; fi
    d=${{f%/*}}
    if [ "$d" != "$f" ] && [ -d "$d" ]; then rmdir -p --ignore-fail-on-non-empty -- "$d" || exit 1; fi
  done || {{ rm -f {manifest}; echo 'deploykit: could not remove the files no longer in the app source' >&2; exit 1; }}
cp {manifest} {applied}.tmp && mv -f {applied}.tmp {applied}"""


def manifest_path(cfg: AppHostConfig) -> str:
    """The list of the files deploykit puts in the install directory (beside it, not in the app's tree)."""
    return f"{cfg.install_dir}.files"


def manifest(cfg: AppHostConfig) -> str:
    header = f"# Managed by deploykit: the files of {cfg.install_dir}; a file dropped from this list is removed.\n"
    return header + "".join(f"{f.path}\n" for f in cfg.source.files)


def remove_stale_command(cfg: AppHostConfig) -> str:
    q, path = shlex.quote, manifest_path(cfg)
    return REMOVE_STALE_SCRIPT.format(install_dir=q(cfg.install_dir), manifest=q(path), applied=q(path + ".applied"))


def health_command(cfg: AppHostConfig) -> str:
    return f"curl -fsS --max-time 2 -o /dev/null {cfg.health_url}"


def _directories(cfg: AppHostConfig) -> tuple[Directory, ...]:
    base = f"/opt/{cfg.name}"
    subdirs = sorted({f.path.rsplit("/", 1)[0] for f in cfg.source.files if "/" in f.path})
    nested = sorted({"/".join(d.split("/")[: i + 1]) for d in subdirs for i in range(d.count("/") + 1)})
    return (
        Directory(base),
        Directory(cfg.install_dir),
        *(Directory(f"{cfg.install_dir}/{d}") for d in nested),
        Directory(f"/etc/{cfg.name}", mode="0750"),
    )


def _state(role: str, cfg: AppHostConfig) -> RoleState:
    running = units(cfg)
    unit_dir = "/etc/systemd/system"
    files = [
        ManagedFile(
            f"/etc/sysusers.d/{cfg.name}.conf",
            render("app/sysusers.conf.j2", cfg=cfg),
            after_change=f"systemd-sysusers /etc/sysusers.d/{cfg.name}.conf",
        ),
        *(ManagedFile(f"{cfg.install_dir}/{f.path}", f.content, mode=f.mode, notify=running) for f in cfg.source.files),
        ManagedFile(
            cfg.env_path,
            render("app/app.env.j2", cfg=cfg, units=running, env=[(k, env_value(v)) for k, v in cfg.environment()]),
            mode="0640",
            notify=running,
        ),
    ]
    services = []
    waits = []
    if cfg.runs_web:
        files.append(
            ManagedFile(
                f"{unit_dir}/{cfg.web_unit}.service", render("app/web.service.j2", cfg=cfg), notify=(cfg.web_unit,)
            )
        )
        services.append(Unit(cfg.web_unit))
        waits.append(Wait(f"{cfg.name} answers {cfg.health_url}", health_command(cfg), timeout_s=120))
        if cfg.release_command:
            files.append(
                ManagedFile(f"{unit_dir}/{cfg.release_unit}.service", render("app/release.service.j2", cfg=cfg))
            )
    if cfg.worker_unit in running:
        files.append(
            ManagedFile(
                f"{unit_dir}/{cfg.worker_unit}.service",
                render("app/worker.service.j2", cfg=cfg),
                notify=(cfg.worker_unit,),
            )
        )
        services.append(Unit(cfg.worker_unit))
        waits.append(
            Wait(f"{cfg.worker_unit} running", f"systemctl is-active --quiet {cfg.worker_unit}.service", timeout_s=60)
        )
    # Last: an apply that fails before it leaves the old manifest live, and the next one cleans up.
    files.append(ManagedFile(manifest_path(cfg), manifest(cfg), after_change=remove_stale_command(cfg)))
    return RoleState(
        role=role,
        packages=PACKAGES,
        directories=_directories(cfg),
        files=tuple(files),
        services=tuple(services),
        waits=tuple(waits),
        once=release_command(cfg),
    )


def desired_app(cfg: AppHostConfig) -> RoleState:
    if not cfg.runs_web:
        raise ValueError(f"{cfg.host} does not have the app role")
    return _state("app", cfg)


def desired_worker(cfg: AppHostConfig) -> RoleState:
    """A worker-only host's state; empty on a host that also has the app role (desired_app covers it)."""
    if not cfg.runs_worker:
        raise ValueError(f"{cfg.host} does not have the worker role")
    return RoleState("worker") if cfg.runs_web else _state("worker", cfg)


def desired(cfg: AppHostConfig) -> RoleState:
    """Everything the host's app processes need, whichever of the two roles it has."""
    return desired_app(cfg) if cfg.runs_web else desired_worker(cfg)
