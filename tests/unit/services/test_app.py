"""Roles app and worker: per-host config (endpoints, secrets, release id, app source) and the rendered state.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
(the release id is pinned there, so editing chirp's code does not touch them).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from deploykit.execute.diff import diff_host
from deploykit.execute.probe import FileFact, HostFacts
from deploykit.execute.steps import Shell, Upload, role_steps
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import RoleState, Unit
from deploykit.secret import Secret
from deploykit.services.app import APP, WORKER
from deploykit.services.app import state as app
from deploykit.services.app.config import (
    BUNDLED_APP,
    AppHostConfig,
    AppSourceError,
    SourceFile,
    app_config,
    parse_procfile,
)
from deploykit.services.contract import ConfigContext
from deploykit.services.ports import mesh_addresses

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "app"
PINNED_RELEASE = "0123456789ab"


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def context_of(inv: Inventory) -> ConfigContext:
    return ConfigContext(inv, plan_placement(inv), secret)


LAB = context_of(load_inventory(REPO / "inventories" / "lab.yml"))


def lab(host: str) -> AppHostConfig:
    return app_config(LAB, LAB.inv.host(host))


def mesh(ctx: ConfigContext, *hosts: str) -> str:
    """The hosts' mesh addresses (hashed from their names), comma-separated."""
    return ",".join(str(ctx.inv.host(h).mesh_address) for h in hosts)


# --- config ------------------------------------------------------------------------------------------------


def test_lab_config() -> None:
    cfg = lab("rbx1-web-2")
    assert (cfg.name, cfg.user, cfg.install_dir, cfg.env_path) == (
        "chirp",
        "chirp",
        "/opt/chirp/app",
        "/etc/chirp/chirp.env",
    )
    # through its site's load balancers on the mesh, itself first (it is one), then in VRRP priority order
    assert (cfg.db_host, cfg.db_port, cfg.db_name, cfg.db_user) == (
        mesh(LAB, "rbx1-web-2", "rbx1-web-1"),
        5000,
        "chirp",
        "chirp",
    )
    assert lab("rbx1-web-1").db_host == mesh(LAB, "rbx1-web-1", "rbx1-web-2")
    # the pooler's transaction pool, and its session pool for what needs a session; never an `options` parameter
    env = dict(cfg.environment())
    assert (env["CHIRP_DB_NAME"], env["CHIRP_DB_SESSION_NAME"], env["CHIRP_DB_POOLED"]) == (
        "chirp", "chirp_session", "1")
    assert cfg.sentinels == tuple(f"{mesh(LAB, h)}:26379" for h in ("ams1-data-1", "fra1-data-1", "rbx1-data-1"))
    assert cfg.redis_master == "chirp-lab"
    assert (cfg.db_password, cfg.cache_password, cfg.secret_key) == (
        secret("db-app-password"),
        secret("cache-password"),
        secret("app-secret-key"),
    )
    me = mesh(LAB, "rbx1-web-2")
    assert cfg.web_command is not None and cfg.web_command.startswith(f"gunicorn --bind {me}:8000 --workers 2 ")
    assert cfg.worker_command == "python3 -m chirp worker"
    assert cfg.release_command == "python3 -m chirp migrate"
    assert cfg.health_url == f"http://{me}:8000/healthz"  # where gunicorn listens, and HAProxy checks
    assert "s3cr3t" not in repr(cfg)


def test_release_is_the_same_on_every_host_and_follows_the_code(tmp_path: Path) -> None:
    assert len({lab(h.name).release for h in LAB.inv.with_role("app")}) == 1
    assert len(lab("fra1-web-1").release) == 12
    other = dataclasses.replace(
        LAB.inv,
        services=dataclasses.replace(LAB.inv.services, app=dataclasses.replace(LAB.inv.services.app, workers=3)),
    )
    assert app_config(context_of(other), other.host("fra1-web-1")).release != lab("fra1-web-1").release


def test_bundled_source_skips_caches() -> None:
    paths = [f.path for f in lab("fra1-web-1").source.files]
    assert "Procfile" in paths and "chirp/wsgi.py" in paths and "chirp/web.py" in paths
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]


def test_db_endpoint_without_local_lb(
    load_text: Callable[..., Inventory], make_inventory: Callable[..., str], base_hosts: dict[str, str]
) -> None:
    hosts = {**base_hosts, "ams1-web-[1:2]": "{address: 10.3.0.11, site: ams1, roles: [app, worker]}"}
    ctx = context_of(load_text(make_inventory(hosts=hosts)))
    first = app_config(ctx, ctx.inv.host("ams1-web-1"))
    assert (first.db_host, first.db_port) == (mesh(ctx, "fra1-web-1", "fra1-web-2"), 5000)  # first site with lbs
    assert app_config(ctx, ctx.inv.host("rbx1-web-2")).db_host == mesh(ctx, "rbx1-web-2", "rbx1-web-1")  # its own


def test_db_endpoint_without_any_lb(
    load_text: Callable[..., Inventory], make_inventory: Callable[..., str], base_hosts: dict[str, str]
) -> None:
    hosts = {k: v.replace("[lb, app, worker]", "[app, worker]") for k, v in base_hosts.items()}
    ctx = context_of(load_text(make_inventory(hosts=hosts)))
    cfg = app_config(ctx, ctx.inv.host("fra1-web-1"))
    # libpq picks the read-write one
    assert (cfg.db_host, cfg.db_port) == (mesh(ctx, "ams1-data-1", "fra1-data-1", "rbx1-data-1"), 6432)  # poolers


def test_no_public_address_in_any_file() -> None:
    for host in LAB.inv.with_role("app"):
        cfg = lab(host.name)
        for f in app.desired(cfg).files:
            found = [h.name for h in LAB.inv.hosts if re.search(rf"\b{re.escape(str(h.address))}\b", f.content)]
            assert not found, f"{host.name}:{f.path} names the public address of {found}"
        assert str(host.address) not in " ".join(w.command for w in app.desired(cfg).waits)


def test_load_balancers_reach_the_app_on_the_mesh() -> None:
    rules = APP.firewall(LAB, LAB.inv.host("fra1-web-1"))
    assert [(r.description, r.port, r.sources, r.interface) for r in rules] == [
        ("app", 8000, mesh_addresses(LAB.inv, "lb"), "mesh0")
    ]
    (frontend,) = APP.frontends(LAB.inv, "fra1")
    assert [(b.name, b.address, b.backup) for b in frontend.backends] == [
        (h.name, h.mesh_address, h.site != "fra1") for h in LAB.inv.with_role("app")
    ]
    assert WORKER.firewall(LAB, LAB.inv.host("fra1-web-1")) == ()  # the worker listens on nothing


def test_only_app_and_worker_hosts() -> None:
    with pytest.raises(ValueError, match="neither the app nor the worker role"):
        app_config(LAB, LAB.inv.host("fra1-data-1"))


def write_app(root: Path, procfile: str | None, files: dict[str, str | bytes] | None = None) -> None:
    root.mkdir(parents=True, exist_ok=True)
    if procfile is not None:
        (root / "Procfile").write_text(procfile)
    for name, content in (files or {"hello.py": "print('hi')\n"}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def custom(load_text: Callable[..., Inventory], make_inventory: Callable[..., str], services: str) -> ConfigContext:
    return context_of(load_text(make_inventory(services=services)))


def test_custom_app_with_command(
    tmp_path: Path, load_text: Callable[..., Inventory], make_inventory: Callable[..., str]
) -> None:
    write_app(
        tmp_path / "apps" / "My_Shop",
        "worker: ./run-worker --n {workers}\n",
        {"shop/app.py": "x = 1\n", "run-worker": "#!/bin/sh\n", "shop/__pycache__/app.cpython-311.pyc": b"\0"},
    )
    (tmp_path / "apps" / "My_Shop" / "run-worker").chmod(0o755)
    ctx = custom(
        load_text,
        make_inventory,
        "services:\n  app: {source: apps/My_Shop, command: 'uwsgi --http {address}:{port} 100%', workers: 4}",
    )
    cfg = app_config(ctx, ctx.inv.host("fra1-web-1"))
    assert (cfg.name, cfg.env_prefix, cfg.env_path) == ("my-shop", "MY_SHOP_", "/etc/my-shop/my-shop.env")
    assert cfg.web_command == f"uwsgi --http {mesh(ctx, 'fra1-web-1')}:8000 100%%"  # '%' escaped for systemd
    assert cfg.worker_command == "./run-worker --n 4"
    assert cfg.release_command is None
    assert [(f.path, f.mode) for f in cfg.source.files] == [
        ("Procfile", "0644"),
        ("run-worker", "0755"),
        ("shop/app.py", "0644"),
    ]
    state = app.desired_app(cfg)
    assert [f.path for f in state.files if f.path.endswith(".service")] == [
        "/etc/systemd/system/my-shop.service",
        "/etc/systemd/system/my-shop-worker.service",
    ]
    assert (
        "MY_SHOP_DB_PASSWORD=s3cr3t-db-app-password" in next(f for f in state.files if f.path.endswith(".env")).content
    )
    assert app.release_command(cfg) is None
    assert "/opt/my-shop/app/shop" in [d.path for d in state.directories]


def test_custom_app_errors(
    tmp_path: Path, load_text: Callable[..., Inventory], make_inventory: Callable[..., str]
) -> None:
    ctx = custom(load_text, make_inventory, "services:\n  app: {source: missing}")
    with pytest.raises(AppSourceError, match="does not exist"):
        app_config(ctx, ctx.inv.host("fra1-web-1"))
    write_app(tmp_path / "noweb", "worker: run\n")
    ctx = custom(load_text, make_inventory, "services:\n  app: {source: noweb}")
    with pytest.raises(AppSourceError, match="no command serves the app"):
        app_config(ctx, ctx.inv.host("fra1-web-1"))
    write_app(tmp_path / "noworker", None)
    ctx = custom(load_text, make_inventory, "services:\n  app: {source: noworker, command: serve}")
    with pytest.raises(AppSourceError, match="no `worker:` line"):
        app_config(ctx, ctx.inv.host("fra1-web-1"))
    write_app(tmp_path / "binary", "web: serve\nworker: work\n", {"logo.png": b"\x89PNG\0\0"})
    ctx = custom(load_text, make_inventory, "services:\n  app: {source: binary}")
    with pytest.raises(AppSourceError, match="logo.png: not a UTF-8 text file"):
        app_config(ctx, ctx.inv.host("fra1-web-1"))


def test_procfile_parsing() -> None:
    assert parse_procfile("# c\n\nweb: a b:c\nrelease: m\n", "P") == {"web": "a b:c", "release": "m"}
    with pytest.raises(AppSourceError, match="P:1: expected one"):
        parse_procfile("clock: tick\n", "P")
    with pytest.raises(AppSourceError, match="P:2: expected one"):
        parse_procfile("web: a\nweb: b\n", "P")


def test_env_values_are_quoted_for_systemd() -> None:
    assert app.env_value("10.0.0.1:26379,10.0.0.2:26379") == "10.0.0.1:26379,10.0.0.2:26379"
    assert app.env_value(Secret("x", 'a b"c\\d$e')) == '"a b\\"c\\\\d$e"'


# --- state -------------------------------------------------------------------------------------------------


def test_app_and_worker_host_state() -> None:
    cfg = lab("fra1-web-1")
    state = app.desired_app(cfg)
    assert state.role == "app"
    assert state.packages == ("gunicorn", "python3-flask", "python3-psycopg2", "python3-redis", "curl")
    assert state.services == (Unit("chirp"), Unit("chirp-worker"))
    by_path = {f.path: f for f in state.files}
    env = by_path["/etc/chirp/chirp.env"]
    assert (env.mode, env.owner, env.group, env.notify) == ("0640", "root", "root", ("chirp", "chirp-worker"))
    code = by_path["/opt/chirp/app/chirp/web.py"]
    assert code.notify == ("chirp", "chirp-worker") and code.content == (BUNDLED_APP / "chirp/web.py").read_text()
    assert by_path["/etc/systemd/system/chirp.service"].notify == ("chirp",)
    assert by_path["/etc/systemd/system/chirp-worker.service"].notify == ("chirp-worker",)
    assert by_path["/etc/systemd/system/chirp-release.service"].notify == ()
    assert by_path["/etc/sysusers.d/chirp.conf"].after_change == "systemd-sysusers /etc/sysusers.d/chirp.conf"
    assert [w.command for w in state.waits] == [
        f"curl -fsS --max-time 2 -o /dev/null http://{mesh(LAB, 'fra1-web-1')}:8000/healthz",
        "systemctl is-active --quiet chirp-worker.service",
    ]
    assert app.release_command(cfg) == "systemctl start chirp-release.service"
    assert app.desired_worker(cfg) == app.desired_worker(cfg) and app.desired_worker(cfg).files == ()
    assert app.desired(cfg) == state


def test_worker_only_host(
    load_text: Callable[..., Inventory], make_inventory: Callable[..., str], base_hosts: dict[str, str]
) -> None:
    hosts = {**base_hosts, "fra1-bg-1": "{address: 10.1.0.31, site: fra1, roles: [worker]}"}
    ctx = context_of(load_text(make_inventory(hosts=hosts)))
    cfg = app_config(ctx, ctx.inv.host("fra1-bg-1"))
    assert (cfg.runs_web, cfg.web_command, cfg.release_command) == (False, None, None)
    state = app.desired_worker(cfg)
    assert state.role == "worker" and state.services == (Unit("chirp-worker"),)
    assert [f.path for f in state.files if "/systemd/" in f.path] == ["/etc/systemd/system/chirp-worker.service"]
    assert {f.notify for f in state.files if f.path.startswith("/opt/chirp/app/")} == {("chirp-worker",)}
    assert app.release_command(cfg) is None
    with pytest.raises(ValueError, match="does not have the app role"):
        app.desired_app(cfg)


# --- files removed from the source ----------------------------------------------------------------------


def test_manifest_lists_the_source_files_and_comes_last() -> None:
    cfg = lab("fra1-web-1")
    state = app.desired_app(cfg)
    last = state.files[-1]
    assert (last.path, last.mode, last.notify) == ("/opt/chirp/app.files", "0644", ())
    assert last.content.splitlines() == [
        "# Managed by deploykit: the files of /opt/chirp/app; a file dropped from this list is removed.",
        *(f.path for f in cfg.source.files),
    ]
    assert last.after_change == (
        "cd /opt/chirp/app || exit 1\n"
        "{ if [ -f /opt/chirp/app.files.applied ]; then cat /opt/chirp/app.files.applied; "
        "else find . ! -type d | sed 's|^\\./||'; fi; } |\n"
        "  grep -vxF -f /opt/chirp/app.files | while IFS= read -r f; do\n"
        "    case $f in ''|'#'*) continue ;; esac\n"
        '    if [ -f "$f" ] || [ -L "$f" ]; then rm -f -- "$f" || exit 1; fi\n'
        "    d=${f%/*}\n"
        '    if [ "$d" != "$f" ] && [ -d "$d" ]; then rmdir -p --ignore-fail-on-non-empty -- "$d" || exit 1; fi\n'
        "  done || { rm -f /opt/chirp/app.files; "
        "echo 'deploykit: could not remove the files no longer in the app source' >&2; exit 1; }\n"
        "cp /opt/chirp/app.files /opt/chirp/app.files.applied.tmp && "
        "mv -f /opt/chirp/app.files.applied.tmp /opt/chirp/app.files.applied"
    )
    worker_only = dataclasses.replace(cfg, runs_web=False)
    assert app.desired_worker(worker_only).files[-1] == last  # worker hosts clean up too


def with_files(cfg: AppHostConfig, *paths: str, install_dir: str | None = None) -> AppHostConfig:
    files = tuple(SourceFile(p, f"# {p}\n", "0644") for p in sorted(paths))
    return dataclasses.replace(
        cfg, source=dataclasses.replace(cfg.source, files=files), install_dir=install_dir or cfg.install_dir
    )


def release(cfg: AppHostConfig) -> None:
    """What the apply does on a host, without the units: the files, then the manifest and its after_change."""
    root = Path(cfg.install_dir)
    for f in cfg.source.files:
        (root / f.path).parent.mkdir(parents=True, exist_ok=True)
        (root / f.path).write_text(f.content)
    Path(app.manifest_path(cfg)).write_text(app.manifest(cfg))
    subprocess.run(["sh", "-c", app.remove_stale_command(cfg)], check=True, capture_output=True)


def tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() + "/" * p.is_dir() for p in root.rglob("*"))


def test_a_release_removes_what_left_the_source_and_nothing_else(tmp_path: Path) -> None:
    base = tmp_path / "opt" / "chirp"
    (base / "venv").mkdir(parents=True)
    (base / "venv" / "keep.py").write_text("")  # beside the install directory: never touched
    cfg = with_files(
        lab("fra1-web-1"),
        "Procfile",
        "app/web.py",
        "app/old/gone.py",
        "app/old/deep/x.py",
        "top.py",
        install_dir=str(base / "app"),
    )
    release(cfg)  # a first release: nothing to remove, the manifest is recorded
    assert tree(base / "app") == [
        "Procfile",
        "app/",
        "app/old/",
        "app/old/deep/",
        "app/old/deep/x.py",
        "app/old/gone.py",
        "app/web.py",
        "top.py",
    ]
    assert (base / "app.files.applied").read_text() == app.manifest(cfg)
    (base / "app" / "app" / "local.txt").write_text("not deploykit's")  # in no manifest: kept
    new = with_files(cfg, "Procfile", "app/web.py", "app/new.py")
    release(new)
    assert tree(base / "app") == ["Procfile", "app/", "app/local.txt", "app/new.py", "app/web.py"]
    assert tree(base) == [
        "app.files",
        "app.files.applied",
        "app/",
        "app/Procfile",
        "app/app/",
        "app/app/local.txt",
        "app/app/new.py",
        "app/app/web.py",
        "venv/",
        "venv/keep.py",
    ]
    assert (base / "app.files.applied").read_text() == app.manifest(new)
    release(new)  # the same again: nothing to remove
    assert tree(base / "app") == ["Procfile", "app/", "app/local.txt", "app/new.py", "app/web.py"]


def test_a_host_from_before_the_manifest_is_cleaned_once(tmp_path: Path) -> None:
    root = tmp_path / "app"
    for stale in ("gone.py", "pkg/old/x.py", "pkg/keep.py.deploykit-new"):
        (root / stale).parent.mkdir(parents=True, exist_ok=True)
        (root / stale).write_text("")
    release(with_files(lab("fra1-web-1"), "Procfile", "pkg/keep.py", install_dir=str(root)))
    assert tree(root) == ["Procfile", "pkg/", "pkg/keep.py"]
    assert (tmp_path / "app.files.applied").is_file()


def test_a_failed_clean_up_is_tried_again_by_the_next_apply(tmp_path: Path) -> None:
    root = tmp_path / "app"
    cfg = with_files(lab("fra1-web-1"), "Procfile", "gone.py", install_dir=str(root))
    release(cfg)
    new = with_files(cfg, "Procfile")
    Path(app.manifest_path(new)).write_text(app.manifest(new))
    bin_dir = tmp_path / "bin"  # an `rm` that cannot remove gone.py
    bin_dir.mkdir()
    (bin_dir / "rm").write_text('#!/bin/sh\ncase "$*" in *gone.py*) exit 1 ;; esac\nexec /bin/rm "$@"\n')
    (bin_dir / "rm").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    failed = subprocess.run(["sh", "-c", app.remove_stale_command(new)], env=env, capture_output=True, text=True)
    assert failed.returncode == 1 and "could not remove the files no longer in the app source" in failed.stderr
    # no manifest left: the next apply writes it again (a "create") and its after_change runs again
    assert not Path(app.manifest_path(new)).exists() and (root / "gone.py").exists()
    assert (tmp_path / "app.files.applied").read_text() == app.manifest(cfg)
    release(new)
    assert tree(root) == ["Procfile"]


def facts_of(states: list[RoleState]) -> HostFacts:
    """A host that has exactly `states` in place."""
    return HostFacts(
        files={f.path: FileFact(int(f.mode, 8), f.owner, f.group, f.content.encode()) for s in states for f in s.files},
        directories={d.path: (int(d.mode, 8), d.owner, d.group) for s in states for d in s.directories},
        packages={p: True for s in states for p in s.packages},
        units={u.name: ("enabled", "active") for s in states for u in s.services},
    )


def test_removing_a_file_changes_the_manifest_and_a_no_op_changes_nothing() -> None:
    cfg = lab("fra1-web-1")
    state = app.desired_app(cfg)
    assert not diff_host("fra1-web-1", [state], facts_of([state]), str).changed
    legacy = SourceFile("chirp/legacy.py", "x = 1\n", "0644")
    old = dataclasses.replace(cfg, source=dataclasses.replace(cfg.source, files=(*cfg.source.files, legacy)))
    (changes,) = diff_host("fra1-web-1", [state], facts_of([app.desired_app(old)]), str).roles
    assert {(c.file.path, c.action) for c in changes.files} == {("/opt/chirp/app.files", "update")}
    steps = role_steps(changes)
    assert [s.dest for s in steps if isinstance(s, Upload)] == ["/opt/chirp/app.files.deploykit-new"]
    assert Shell("apply /opt/chirp/app.files", app.remove_stale_command(cfg)) in steps
    assert [s.description for s in steps if isinstance(s, Shell) and "legacy" in s.command] == []


def rendered(host: str) -> dict[str, str]:
    cfg = dataclasses.replace(lab(host), release=PINNED_RELEASE)
    return {Path(f.path).name: f.content for f in app.desired(cfg).files if not f.path.startswith("/opt/")}


@pytest.mark.parametrize("host", [h.name for h in LAB.inv.with_role("app")])
def test_golden(host: str, matches_golden) -> None:
    files = rendered(host)
    assert sorted(files) == [
        "chirp-release.service",
        "chirp-worker.service",
        "chirp.conf",
        "chirp.env",
        "chirp.service",
    ]
    for name, content in files.items():
        matches_golden(GOLDEN / f"{host}__{name}.txt", content)


def test_during_a_rotation_the_app_gets_the_new_db_password_and_the_previous_one() -> None:
    from deploykit.services.app.config import app_config

    base = LAB
    ctx = ConfigContext(base.inv, base.placement, base.secret,
                        previous=lambda name: Secret(name, "old") if name == "db-app-password" else None)
    env = dict(app_config(ctx, base.inv.host("fra1-web-1")).environment())
    assert env["CHIRP_DB_PASSWORD"] == base.secret("db-app-password")
    assert env["CHIRP_DB_PASSWORD_PREVIOUS"] == Secret("db-app-password", "old")
    assert dict(app_config(base, base.inv.host("fra1-web-1")).environment())["CHIRP_DB_PASSWORD_PREVIOUS"] == ""


@pytest.mark.parametrize(("command", "threads"), [
    ("gunicorn --workers {workers} --worker-class gthread --threads 4 chirp.wsgi:app", 4),
    ("gunicorn --threads=8 app:app", 8),
    ("gunicorn --workers 3 app:app", 1),
    ("gunicorn --max-threads 9 app:app", 1),
    (None, 1),
])
def test_web_threads_come_from_gunicorns_option(command: str | None, threads: int) -> None:
    from deploykit.services.app.config import web_threads

    assert web_threads(command) == threads
