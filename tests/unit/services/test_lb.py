"""Role lb: HAProxy frontends/backends and keepalived's VRRP instance per host, and the rendered state.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
Where haproxy and keepalived are installed, the lab's rendered configs are also checked by the tools.
"""

from __future__ import annotations

import shutil
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import ManagedFile, RoleState, Unit
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.lb import state as lb
from deploykit.services.lb.config import LbHostConfig, lb_config, vrrp_auth_pass

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "lb"
LB_HOSTS = ("ams1-web-1", "ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def context_of(inv: Inventory, secrets=secret) -> ConfigContext:  # noqa: ANN001
    return ConfigContext(inv, plan_placement(inv), secrets)


LAB = context_of(load_inventory(REPO / "inventories" / "lab.yml"))


def lab(host: str, **kwargs: str) -> LbHostConfig:
    return lb_config(LAB, LAB.inv.host(host), **kwargs)


def state(host: str) -> RoleState:
    return lb.desired(lab(host))


def file(st: RoleState, path: str) -> ManagedFile:
    return next(f for f in st.files if f.path == path)


def lines(st: RoleState, path: str) -> list[str]:
    return [ln.strip() for ln in file(st, path).content.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def section(st: RoleState, header: str) -> list[str]:
    """The lines of one haproxy.cfg section (`backend app`, `listen cache`, ...)."""
    out: list[str] | None = None
    for ln in file(st, lb.HAPROXY_CFG).content.splitlines():
        if out is not None and ln and not ln.startswith(" "):
            break
        if ln == header:
            out = []
        elif out is not None and ln.strip() and not ln.strip().startswith("#"):
            out.append(ln.strip())
    assert out is not None, f"no section {header!r}"
    return out


# --- config: HAProxy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", LB_HOSTS)
def test_other_sites_app_hosts_are_backups(host: str) -> None:
    cfg = lab(host)
    assert cfg.app is not None
    site = LAB.inv.host(host).site
    assert [(s.name, s.backup) for s in cfg.app.servers] == [(h.name, h.site != site) for h in LAB.inv.with_role("app")]
    servers = [ln for ln in section(state(host), "backend app") if ln.startswith("server ")]
    assert [ln.endswith(" backup") for ln in servers] == [h.site != site for h in LAB.inv.with_role("app")]


def test_a_site_without_app_hosts_uses_every_app_host(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = dict(base_hosts)
    hosts["ams1-web-[1:2]"] = "{address: 10.3.0.11, site: ams1, roles: [lb]}"
    inv = load_text(make_inventory(hosts=hosts))
    cfg = lb_config(context_of(inv), inv.host("ams1-web-1"))
    assert cfg.app is not None
    assert [s.backup for s in cfg.app.servers] == [False] * 4


def test_app_backend() -> None:
    backend = section(state("fra1-web-1"), "backend app")
    assert "option httpchk GET /healthz" in backend
    assert "http-check expect status 200" in backend
    assert "default-server inter 1000ms fall 2 rise 2" in backend
    assert "server fra1-web-1 10.77.1.11:8000 check" in backend
    assert "server rbx1-web-2 10.77.2.12:8000 check backup" in backend
    assert section(state("fra1-web-1"), "frontend app") == [
        "bind *:80",
        "mode http",
        "option forwardfor",
        "default_backend app",
    ]


def test_defaults_and_runtime_api() -> None:
    cfg = lines(state("fra1-web-1"), lb.HAPROXY_CFG)
    for want in (
        "option redispatch",
        "retries 3",
        "timeout connect 1s",
        "stats socket /run/haproxy/admin.sock mode 660 level admin",
    ):
        assert want in cfg


def test_db_listens_check_patroni() -> None:
    st = state("rbx1-web-1")
    for name, port, path in (("db-primary", 5000, "/primary"), ("db-replicas", 5001, "/replica")):
        listen = section(st, f"listen {name}")
        assert listen[:3] == [f"bind 10.77.2.11:{port}", f"bind 10.77.2.100:{port}", f"bind 127.0.0.1:{port}"]
        assert "mode tcp" in listen
        assert f"option httpchk GET {path}" in listen
        assert "default-server inter 1000ms fall 2 rise 2 on-marked-down shutdown-sessions" in listen
        assert [ln for ln in listen if ln.startswith("server ")] == [
            "server ams1-data-1 10.77.3.21:5432 check port 8008",
            "server fra1-data-1 10.77.1.21:5432 check port 8008",
            "server rbx1-data-1 10.77.2.21:5432 check port 8008",
        ]


def test_cache_listen_checks_for_the_master() -> None:
    listen = section(state("ams1-web-2"), "listen cache")
    assert "bind 10.77.3.100:6380" in listen
    checks = [ln for ln in listen if ln.startswith("tcp-check")]
    assert checks[:3] == [
        "tcp-check connect",
        r"tcp-check send 'AUTH s3cr3t-cache-password'\r\n",
        "tcp-check expect string +OK",
    ]
    assert r"tcp-check send info\ replication\r\n" in checks
    assert "tcp-check expect string role:master" in checks
    assert "server fra1-data-1 10.77.1.21:6379 check" in listen


def test_no_cache_no_cache_listen_and_no_cache_secret(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = {k: v.replace(", cache]", "]") for k, v in base_hosts.items()}
    inv = load_text(make_inventory(hosts=hosts))
    asked: list[str] = []

    def recording(name: str) -> Secret:
        asked.append(name)
        return secret(name)

    cfg = lb_config(context_of(inv, recording), inv.host("fra1-web-1"))
    assert all(t.check_secret is None for t in cfg.listens)
    assert "cache-password" not in asked
    assert [t.name for t in cfg.listens] == ["db-primary", "db-replicas"]
    assert "listen cache" not in file(lb.desired(cfg), lb.HAPROXY_CFG).content


def test_stats_listener() -> None:
    stats = section(state("fra1-web-2"), "listen stats")
    assert stats[:2] == ["bind 10.77.1.12:8404", "bind 127.0.0.1:8404"]
    assert "stats auth 'admin:s3cr3t-haproxy-stats-password'" in stats


# --- config: keepalived ------------------------------------------------------------------------------------


def test_vrrp_priorities_router_ids_and_peers() -> None:
    got = {h: (lab(h).vrrp.router_id, lab(h).vrrp.priority, lab(h).vrrp.peers) for h in LB_HOSTS}
    a = IPv4Address
    assert got == {
        "fra1-web-1": (51, 150, (a("10.77.1.12"),)),
        "fra1-web-2": (51, 140, (a("10.77.1.11"),)),
        "rbx1-web-1": (52, 150, (a("10.77.2.12"),)),
        "rbx1-web-2": (52, 140, (a("10.77.2.11"),)),
        "ams1-web-1": (53, 150, (a("10.77.3.12"),)),
        "ams1-web-2": (53, 140, (a("10.77.3.11"),)),
    }


def test_unicast_peers_are_exactly_the_sites_other_lbs(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = dict(base_hosts)
    hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [app]}"
    hosts["fra1-lb-[1:3]"] = "{address: 10.1.0.31, site: fra1, roles: [lb]}"
    inv = load_text(make_inventory(hosts=hosts))
    ctx = context_of(inv)
    cfg = lb_config(ctx, inv.host("fra1-lb-2"))
    assert cfg.vrrp.peers == (IPv4Address("10.1.0.31"), IPv4Address("10.1.0.33"))
    assert (cfg.vrrp.priority, cfg.vrrp.router_id) == (140, 51)
    conf = file(lb.desired(cfg), lb.KEEPALIVED_CONF).content
    assert "unicast_src_ip 10.1.0.32\n    unicast_peer {\n        10.1.0.31\n        10.1.0.33\n    }" in conf


def test_a_lone_lb_has_no_unicast_peers(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = dict(base_hosts)
    hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [app]}"
    hosts["fra1-lb-1"] = "{address: 10.1.0.31, site: fra1, roles: [lb]}"
    inv = load_text(make_inventory(hosts=hosts))
    cfg = lb_config(context_of(inv), inv.host("fra1-lb-1"))
    assert cfg.vrrp.peers == ()
    assert "unicast" not in file(lb.desired(cfg), lb.KEEPALIVED_CONF).content


def test_vrrp_instance() -> None:
    conf = lines(state("rbx1-web-2"), lb.KEEPALIVED_CONF)
    for want in (
        "vrrp_instance VI_rbx1 {",
        "state BACKUP",
        "nopreempt",
        "interface host0",
        "virtual_router_id 52",
        "priority 140",
        "advert_int 1",
        "unicast_src_ip 10.77.2.12",
        "auth_type PASS",
        "10.77.2.100/32 dev host0",
        "chk_haproxy",
        "garp_master_delay 1",
        "garp_master_refresh 5",
        f'script "{lb.HAPROXY_RUNNING}"',
    ):
        assert want in conf
    assert "state MASTER" not in conf


def test_interface_is_a_parameter() -> None:
    conf = file(lb.desired(lab("fra1-web-1", interface="eth1")), lb.KEEPALIVED_CONF).content
    assert "interface eth1" in conf and "10.77.1.100/32 dev eth1" in conf and "host0" not in conf


def test_vrrp_auth_pass_is_8_characters_derived_per_site() -> None:
    passes = {h: vrrp_auth_pass(lab(h).vrrp.password) for h in LB_HOSTS}
    assert all(len(p) == 8 and p.isalnum() for p in passes.values())
    assert passes["fra1-web-1"] == passes["fra1-web-2"] != passes["rbx1-web-1"]
    assert lab("fra1-web-1").vrrp.password == secret("keepalived-auth-fra1")
    conf = lines(state("fra1-web-1"), lb.KEEPALIVED_CONF)
    assert f"auth_pass {passes['fra1-web-1']}" in conf
    assert "s3cr3t" not in "\n".join(conf)


def test_a_host_that_is_no_lb_is_refused() -> None:
    with pytest.raises(ValueError, match="not an lb member"):
        lb_config(LAB, LAB.inv.host("fra1-data-1"))


def test_a_second_http_frontend_is_an_error_not_silently_dropped() -> None:
    """Every site's HAProxy serves one HTTP frontend on the public port; a second service asking for one would
    have been left out without a word."""
    import dataclasses

    from deploykit.services.lb.placement import SiteLbPlan

    placement = LAB.placement
    sites = placement.parts["lb"]
    assert isinstance(sites, tuple) and isinstance(sites[0], SiteLbPlan)
    app = sites[0].frontends[0]
    doubled = tuple(dataclasses.replace(s, frontends=(*s.frontends, dataclasses.replace(app, name="admin")))
                    for s in sites)
    ctx = dataclasses.replace(LAB, placement=dataclasses.replace(placement, parts={**placement.parts, "lb": doubled}))
    with pytest.raises(ValueError, match=r"more than one service asks .* HTTP frontend \(app, admin\)"):
        lb_config(ctx, LAB.inv.host("fra1-web-1"))


# --- rendered state ----------------------------------------------------------------------------------------


def test_validate_notify_and_services() -> None:
    st = state("fra1-web-1")
    haproxy_cfg, keepalived_conf = file(st, lb.HAPROXY_CFG), file(st, lb.KEEPALIVED_CONF)
    assert haproxy_cfg.validate == "haproxy -c -q -f {path}"
    assert keepalived_conf.validate == "keepalived -t -f {path}"
    assert (haproxy_cfg.notify, keepalived_conf.notify) == (("haproxy",), ("keepalived",))
    assert (haproxy_cfg.mode, haproxy_cfg.group, keepalived_conf.mode) == ("0640", "haproxy", "0640")
    assert not haproxy_cfg.seed and not keepalived_conf.seed
    assert st.services == (Unit("haproxy", reload=True), Unit("keepalived", reload=True))
    assert st.packages == ("haproxy", "keepalived", "curl", "socat")


def test_wait_asks_the_stats_port_without_credentials() -> None:
    (wait,) = state("fra1-web-1").waits
    assert "http://127.0.0.1:8404/" in wait.command and "grep -qx 401" in wait.command
    assert "s3cr3t" not in wait.command


def test_secrets_never_in_repr() -> None:
    text = repr(lab("fra1-web-1"))
    assert "s3cr3t" not in text
    for name in ("haproxy-stats-password", "cache-password", "keepalived-auth-fra1"):
        assert f"<secret:{name}>" in text


@pytest.mark.parametrize("bad", ["pa'ss", "pa ss", "pa\nss", ""])
def test_a_secret_haproxy_could_not_parse_is_refused(bad: str) -> None:
    ctx = context_of(LAB.inv, lambda name: Secret(name, bad))
    with pytest.raises(ValueError, match="must consist of"):
        lb.desired(lb_config(ctx, LAB.inv.host("fra1-web-1")))


# --- the real tools (where installed) ----------------------------------------------------------------------


def a_real_interface() -> str | None:
    net = Path("/sys/class/net")
    names = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
    return next((n for n in names if n != "lo"), None)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("host", LB_HOSTS)
def test_haproxy_accepts_the_config(host: str, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(file(state(host), lb.HAPROXY_CFG).content)
    command = lb.HAPROXY_VALIDATE.format(path=path).split()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(
    shutil.which("keepalived") is None or a_real_interface() is None,
    reason="keepalived is not installed (or no network interface to check against)",
)
@pytest.mark.parametrize("host", LB_HOSTS)
def test_keepalived_accepts_the_config(host: str, tmp_path: Path) -> None:
    interface = a_real_interface()
    assert interface is not None
    path = tmp_path / "keepalived.conf"
    path.write_text(file(lb.desired(lab(host, interface=interface)), lb.KEEPALIVED_CONF).content)
    command = lb.KEEPALIVED_VALIDATE.format(path=path).split()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- golden files ------------------------------------------------------------------------------------------


def golden_cases() -> list[tuple[str, str]]:
    return [(h, f.path) for h in LB_HOSTS for f in state(h).files]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = file(state(host), path).content
    golden = GOLDEN / f"{host}__{Path(path).name}.txt"
    matches_golden(golden, content)
