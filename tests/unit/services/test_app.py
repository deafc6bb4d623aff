"""Roles app and worker: per-host config (endpoints, secrets, release id, app source) and the rendered state.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
(the release id is pinned there, so editing chirp's code does not touch them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import Unit
from deploykit.secret import Secret
from deploykit.services.app import APP, WORKER
from deploykit.services.app import state as app
from deploykit.services.app.config import BUNDLED_APP, AppHostConfig, AppSourceError, app_config, parse_procfile
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
    assert (cfg.db_host, cfg.db_port) == (mesh(ctx, "ams1-data-1", "fra1-data-1", "rbx1-data-1"), 5432)


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
    assert {f.notify for f in state.files if f.path.startswith("/opt/")} == {("chirp-worker",)}
    assert app.release_command(cfg) is None
    with pytest.raises(ValueError, match="does not have the app role"):
        app.desired_app(cfg)


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
