"""Roles app and worker: the app's code, its env file and its systemd units (gunicorn; the worker).

One host's app processes share the code and the env file, so one RoleState covers both roles on a host:
`desired_app` on a host with the app role (its web unit, and the worker unit if the host is also a worker),
`desired_worker` on a worker-only host. A change of code or env file restarts every unit on the host that
runs it; the executor restarts app hosts `services.app.batch_size` at a time and runs `release_command`
once per deploy on one app host.
"""

from __future__ import annotations

import re

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
