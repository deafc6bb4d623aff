"""Role lb: HAProxy frontends/backends and keepalived's VRRP instance per host, and the rendered state: HTTPS at
the edge (HTTP redirected to it, the certificate file), everything internal on the mesh.

Regenerate the golden files after an intended change: UPDATE_GOLDEN=1 python -m pytest tests/unit -k golden
Where haproxy and keepalived are installed, the lab's rendered configs are also checked by the tools.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from deploykit.execute.steps import CANDIDATE_SUFFIX, install_file
from deploykit.inventory import Inventory, load_inventory
from deploykit.plan import plan_placement
from deploykit.plan.desired import Directory, ManagedFile, RoleState, Unit
from deploykit.secret import Secret
from deploykit.services.contract import ConfigContext
from deploykit.services.lb import state as lb
from deploykit.services.lb import tls
from deploykit.services.lb.config import LbHostConfig, lb_config, vrrp_auth_pass

REPO = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden" / "lb"
LB_HOSTS = ("ams1-web-1", "ams1-web-2", "fra1-web-1", "fra1-web-2", "rbx1-web-1", "rbx1-web-2")


def secret(name: str) -> Secret:
    return Secret(name, "s3cr3t-" + name)


def context_of(inv: Inventory, secrets=secret) -> ConfigContext:  # noqa: ANN001
    return ConfigContext(inv, plan_placement(inv), secrets)


LAB = context_of(load_inventory(REPO / "inventories" / "lab.yml"))
CERT = "/etc/haproxy/certs/chirp.lab.pem"


def mesh(host: str, inv: Inventory = LAB.inv) -> IPv4Address:
    return inv.host(host).mesh_address


def real_tls_secrets(inv: Inventory) -> dict[str, str]:
    """What the store's makers make for `inv`: deploykit's CA and an edge certificate from it (real PEM)."""
    at = datetime.now(UTC)
    ca_key, key = tls.new_key(), tls.new_key()
    ca = tls.issue_ca(ca_key, inv.name, at)
    edge = tls.issue_edge(ca_key, ca, key, tls.edge_names(inv), tls.edge_addresses(inv), at)
    return {tls.TLS_CA_KEY: ca_key, tls.TLS_CA_CERT: ca, tls.TLS_EDGE_KEY: key, tls.TLS_EDGE_CERT: edge}


REAL_TLS = real_tls_secrets(LAB.inv)


def with_real_tls(name: str) -> Secret:
    return Secret(name, REAL_TLS[name]) if name in REAL_TLS else secret(name)


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


def test_app_backend_servers_are_the_app_hosts_mesh_addresses() -> None:
    backend = section(state("fra1-web-1"), "backend app")
    assert "option httpchk GET /healthz" in backend
    assert "http-check expect status 200" in backend
    assert "default-server inter 1000ms fall 2 rise 2" in backend
    assert f"server fra1-web-1 {mesh('fra1-web-1')}:8000 check" in backend
    assert f"server rbx1-web-2 {mesh('rbx1-web-2')}:8000 check backup" in backend
    assert all(IPv4Address(ln.split()[2].split(":")[0]) in LAB.inv.mesh.network
               for ln in backend if ln.startswith("server "))


def test_the_public_frontend_serves_https_and_redirects_http_but_acme_challenges() -> None:
    assert section(state("fra1-web-1"), "frontend app") == [
        "bind *:80",
        f"bind *:443 ssl crt {CERT} alpn h2,http/1.1",
        "mode http",
        "option forwardfor",
        "http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
        "http-request redirect location https://%[req.hdr(host),field(1,:)]%[capture.req.uri] code 308 "
        "if !{ ssl_fc } !{ path_beg /.well-known/acme-challenge/ }",
        "default_backend app",
    ]
    glob = lines(state("fra1-web-1"), lb.HAPROXY_CFG)
    assert "ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets" in glob


def test_another_https_port_is_in_the_redirect_and_hsts_is_a_setting(load_text, make_inventory) -> None:  # noqa: ANN001
    inv = load_text(make_inventory(services="services:\n  lb: {http_port: 8080, https_port: 8443, hsts: 31536000}"))
    front = section(lb.desired(lb_config(context_of(inv), inv.host("fra1-web-1"))), "frontend app")
    assert front[:2] == ["bind *:8080", "bind *:8443 ssl crt /etc/haproxy/certs/chirp.test.pem alpn h2,http/1.1"]
    assert ("http-request redirect location https://%[req.hdr(host),field(1,:)]:8443%[capture.req.uri] code 308 "
            "if !{ ssl_fc } !{ path_beg /.well-known/acme-challenge/ }") in front
    assert 'http-response set-header Strict-Transport-Security "max-age=31536000" if { ssl_fc }' in front
    assert not any("Strict-Transport-Security" in ln for ln in section(state("fra1-web-1"), "frontend app"))


def test_the_certificate_file_comes_first_holds_chain_and_key_and_is_checked_by_haproxy() -> None:
    st = state("fra1-web-1")
    # live before the cfg's check; keepalived ordered after the mesh (VRRP on it)
    assert [f.path for f in st.files] == [CERT, lb.HAPROXY_CFG, lb.KEEPALIVED_DROPIN, lb.KEEPALIVED_CONF]
    cert = file(st, CERT)
    assert cert.content == "s3cr3t-tls-edge-cert\ns3cr3t-tls-edge-key"  # the chain, then the key
    assert (cert.mode, cert.owner, cert.group, cert.notify) == ("0600", "root", "root", ("haproxy",))
    assert cert.validate == lb.CERT_VALIDATE and cert.validate.format(path="/x").count("/x") == 1
    assert st.directories == (Directory("/etc/haproxy/certs", mode="0700"),)


def test_no_app_hosts_no_https_frontend_and_no_certificate(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = {k: v.replace("lb, app, worker", "lb") for k, v in base_hosts.items()}
    inv = load_text(make_inventory(hosts=hosts))
    asked: list[str] = []

    def recording(name: str) -> Secret:
        asked.append(name)
        return secret(name)

    st = lb.desired(lb_config(context_of(inv, recording), inv.host("fra1-web-1")))
    assert [f.path for f in st.files] == [lb.HAPROXY_CFG, lb.KEEPALIVED_DROPIN, lb.KEEPALIVED_CONF]
    assert st.directories == ()
    assert not any(name.startswith("tls-") for name in asked)


def test_defaults_and_runtime_api() -> None:
    cfg = lines(state("fra1-web-1"), lb.HAPROXY_CFG)
    for want in (
        "option redispatch",
        "retries 3",
        "timeout connect 1s",
        "stats socket /run/haproxy/admin.sock mode 660 level admin",
    ):
        assert want in cfg


def test_db_listens_reach_the_poolers_and_check_patroni() -> None:
    st = state("rbx1-web-1")
    for name, port, path in (("db-primary", 5000, "/primary"), ("db-replicas", 5001, "/replica")):
        listen = section(st, f"listen {name}")
        # the load balancer's own mesh address (and the host itself): never a public address, nor the VIP
        assert listen[:3] == [f"bind {mesh('rbx1-web-1')}:{port}", f"bind 127.0.0.1:{port}", "mode tcp"]
        assert f"option httpchk GET {path}" in listen
        assert "default-server inter 1000ms fall 2 rise 2 on-marked-down shutdown-sessions" in listen
        assert [ln for ln in listen if ln.startswith("server ")] == [
            f"server ams1-data-1 {mesh('ams1-data-1')}:6432 check port 8008",  # PgBouncer; Patroni says who leads
            f"server fra1-data-1 {mesh('fra1-data-1')}:6432 check port 8008",
            f"server rbx1-data-1 {mesh('rbx1-data-1')}:6432 check port 8008",
        ]


def test_cache_listen_checks_for_the_master() -> None:
    listen = section(state("ams1-web-2"), "listen cache")
    assert listen[:2] == [f"bind {mesh('ams1-web-2')}:6380", "bind 127.0.0.1:6380"]
    checks = [ln for ln in listen if ln.startswith("tcp-check")]
    assert checks[:3] == [
        "tcp-check connect",
        r"tcp-check send 'AUTH s3cr3t-cache-password'\r\n",
        "tcp-check expect string +OK",
    ]
    assert r"tcp-check send info\ replication\r\n" in checks
    assert "tcp-check expect string role:master" in checks
    assert f"server fra1-data-1 {mesh('fra1-data-1')}:6379 check" in listen


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
    assert stats[:2] == [f"bind {mesh('fra1-web-2')}:8404", "bind 127.0.0.1:8404"]
    assert "stats auth 'admin:s3cr3t-haproxy-stats-password'" in stats


# --- config: keepalived ------------------------------------------------------------------------------------


def test_vrrp_priorities_router_ids_and_peers_on_the_mesh() -> None:
    got = {h: (lab(h).vrrp.router_id, lab(h).vrrp.priority, lab(h).vrrp.source, lab(h).vrrp.peers) for h in LB_HOSTS}
    assert got == {
        "fra1-web-1": (51, 150, mesh("fra1-web-1"), (mesh("fra1-web-2"),)),
        "fra1-web-2": (51, 140, mesh("fra1-web-2"), (mesh("fra1-web-1"),)),
        "rbx1-web-1": (52, 150, mesh("rbx1-web-1"), (mesh("rbx1-web-2"),)),
        "rbx1-web-2": (52, 140, mesh("rbx1-web-2"), (mesh("rbx1-web-1"),)),
        "ams1-web-1": (53, 150, mesh("ams1-web-1"), (mesh("ams1-web-2"),)),
        "ams1-web-2": (53, 140, mesh("ams1-web-2"), (mesh("ams1-web-1"),)),
    }
    assert {(lab(h).vrrp.interface, lab(h).vrrp.vip_interface) for h in LB_HOSTS} == {("mesh0", "host0")}


def test_unicast_peers_are_exactly_the_sites_other_lbs(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = dict(base_hosts)
    hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [app]}"
    hosts["fra1-lb-[1:3]"] = "{address: 10.1.0.31, site: fra1, roles: [lb]}"
    inv = load_text(make_inventory(hosts=hosts))
    ctx = context_of(inv)
    cfg = lb_config(ctx, inv.host("fra1-lb-2"))
    assert cfg.vrrp.peers == (mesh("fra1-lb-1", inv), mesh("fra1-lb-3", inv))
    assert (cfg.vrrp.priority, cfg.vrrp.router_id) == (140, 51)
    conf = file(lb.desired(cfg), lb.KEEPALIVED_CONF).content
    assert (f"unicast_src_ip {mesh('fra1-lb-2', inv)}\n    unicast_peer {{\n        {mesh('fra1-lb-1', inv)}\n"
            f"        {mesh('fra1-lb-3', inv)}\n    }}") in conf


def test_a_lone_lb_has_no_unicast_peers(load_text, make_inventory, base_hosts) -> None:  # noqa: ANN001
    hosts = dict(base_hosts)
    hosts["fra1-web-[1:2]"] = "{address: 10.1.0.11, site: fra1, roles: [app]}"
    hosts["fra1-lb-1"] = "{address: 10.1.0.31, site: fra1, roles: [lb]}"
    inv = load_text(make_inventory(hosts=hosts))
    cfg = lb_config(context_of(inv), inv.host("fra1-lb-1"))
    assert cfg.vrrp.peers == ()
    conf = file(lb.desired(cfg), lb.KEEPALIVED_CONF).content
    assert "unicast" not in conf and "track_interface" not in conf
    assert cfg.vrrp.interface == cfg.vrrp.vip_interface == "eth0"  # no peer to talk to over the mesh


def test_vrrp_instance() -> None:
    conf = lines(state("rbx1-web-2"), lb.KEEPALIVED_CONF)
    for want in (
        "vrrp_instance VI_rbx1 {",
        "state BACKUP",
        "nopreempt",
        "interface mesh0",
        "virtual_router_id 52",
        "priority 140",
        "advert_int 1",
        f"unicast_src_ip {mesh('rbx1-web-2')}",
        "auth_type PASS",
        "10.77.2.100/32 dev host0",
        "track_interface {",
        "host0",
        "chk_haproxy",
        "garp_master_delay 1",
        "garp_master_refresh 5",
        f'script "{lb.HAPROXY_RUNNING}"',
    ):
        assert want in conf
    assert "state MASTER" not in conf


def test_interfaces_are_parameters() -> None:
    conf = file(lb.desired(lab("fra1-web-1", interface="eth1", mesh_interface="wg9")), lb.KEEPALIVED_CONF).content
    assert "interface wg9" in conf and "10.77.1.100/32 dev eth1" in conf and "host0" not in conf


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
    assert file(st, CERT).validate == lb.CERT_VALIDATE
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
    for name in ("haproxy-stats-password", "cache-password", "keepalived-auth-fra1", "tls-edge-key"):
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


def install(path: Path, f: ManagedFile, content: str | None = None) -> subprocess.CompletedProcess[str]:
    """As the apply installs a file: the candidate beside it, its check, then the rename."""
    Path(str(path) + CANDIDATE_SUFFIX).write_text(f.content if content is None else content)
    return subprocess.run(["sh", "-c", install_file(str(path), f.validate)], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("host", LB_HOSTS)
def test_haproxy_accepts_the_certificate_then_the_config_that_names_it(host: str, tmp_path: Path) -> None:
    st = lb.desired(lb_config(context_of(LAB.inv, with_real_tls), LAB.inv.host(host)))
    cert, cfg = tmp_path / "chirp.lab.pem", tmp_path / "haproxy.cfg"
    done = install(cert, file(st, CERT))
    assert done.returncode == 0, done.stdout + done.stderr
    done = install(cfg, file(st, lb.HAPROXY_CFG), file(st, lb.HAPROXY_CFG).content.replace(CERT, str(cert)))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_a_certificate_with_a_key_not_its_own_never_replaces_the_live_one(tmp_path: Path) -> None:
    st = lb.desired(lb_config(context_of(LAB.inv, with_real_tls), LAB.inv.host("fra1-web-1")))
    cert = tmp_path / "chirp.lab.pem"
    assert install(cert, file(st, CERT)).returncode == 0
    wrong = file(st, CERT).content.replace(REAL_TLS[tls.TLS_EDGE_KEY], REAL_TLS[tls.TLS_CA_KEY])
    done = install(cert, file(st, CERT), wrong)
    assert done.returncode != 0 and "inconsistencies between private key and certificate" in done.stderr
    assert cert.read_text() == file(st, CERT).content
    assert "PRIVATE KEY" not in done.stdout + done.stderr.replace(str(cert), "")


@pytest.mark.skipif(
    shutil.which("keepalived") is None or a_real_interface() is None,
    reason="keepalived is not installed (or no network interface to check against)",
)
@pytest.mark.parametrize("host", LB_HOSTS)
def test_keepalived_accepts_the_config(host: str, tmp_path: Path) -> None:
    interface = a_real_interface()
    assert interface is not None
    path = tmp_path / "keepalived.conf"
    conf = lb.desired(lab(host, interface=interface, mesh_interface=interface))
    path.write_text(file(conf, lb.KEEPALIVED_CONF).content)
    command = lb.KEEPALIVED_VALIDATE.format(path=path).split()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- golden files ------------------------------------------------------------------------------------------


def golden_cases() -> list[tuple[str, str]]:
    # not the certificate file: it is the secrets as they are (here stand-ins), nothing rendered
    return [(h, f.path) for h in LB_HOSTS for f in state(h).files if f.path != CERT]


@pytest.mark.parametrize(("host", "path"), golden_cases())
def test_golden(host: str, path: str, matches_golden) -> None:
    content = file(state(host), path).content
    golden = GOLDEN / f"{host}__{Path(path).name}.txt"
    matches_golden(golden, content)


def test_keepalived_starts_after_the_mesh_its_vrrp_runs_on() -> None:
    """Seen on the lab: keepalived started at boot before mesh0 existed stayed BACKUP on both of a site's load
    balancers, and the site had no VIP; so it is ordered after the mesh's unit."""
    st = lb.desired(lb_config(LAB, LAB.inv.host("fra1-web-1")))
    (dropin,) = [f for f in st.files if f.path == lb.KEEPALIVED_DROPIN]
    assert "After=wg-quick@mesh0.service" in dropin.content and "Wants=wg-quick@mesh0.service" in dropin.content
