"""HTTPS at the edge with the user's own certificate (`services.lb.tls`): checked when the inventory is loaded
(errors name the file, the line and the key; never a traceback), its expiry a plan warning, its key a secret
(copied into the encrypted store, redacted), and the lb/dns services built from it. Also the other lb settings
of the inventory (https_port, hsts)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from deploykit.cli import main
from deploykit.inventory import Inventory
from deploykit.inventory.model import LbTls
from deploykit.plan import plan_placement
from deploykit.secret import Secret
from deploykit.secrets_store import SecretStore
from deploykit.services.contract import ConfigContext
from deploykit.services.dns import SERVICE as DNS
from deploykit.services.lb import SERVICE as LB
from deploykit.services.lb import tls

F = "inventory.yml"
TLS = "services:\n  lb:\n    tls: {certificate: certs/edge.pem, key: certs/edge.key}\n"
NAMES = ("chirp.test", "www.chirp.test")


def write_pair(directory: Path, names: tuple[str, ...] = NAMES, days: int = 90, *, chain_first: bool = False,
               other_key: bool = False, issued_days_ago: int = 0) -> tuple[str, str]:
    """certs/edge.pem (the certificate, then its CA) and certs/edge.key under `directory`; (cert, key) PEM."""
    at = datetime.now(UTC) - timedelta(days=issued_days_ago)
    ca_key, key = tls.new_key(), tls.new_key()
    ca = tls.issue_ca(ca_key, "someone's CA", at)
    cert = tls.issue_edge(ca_key, ca, key, names, (), at, days=days)
    (directory / "certs").mkdir(exist_ok=True)
    (directory / "certs" / "edge.pem").write_text(ca + cert if chain_first else cert + ca)
    (directory / "certs" / "edge.key").write_text(tls.new_key() if other_key else key)
    return cert + ca, key


@pytest.fixture
def own(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The inventory's directory (check_text writes it there); the secrets key elsewhere."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))
    monkeypatch.delenv("DEPLOYKIT_KEY_FILE", raising=False)
    return tmp_path


def test_a_valid_pair_is_taken_with_paths_relative_to_the_inventory(own: Path, load_text, make_inventory) -> None:
    write_pair(own)
    inv = load_text(make_inventory(services=TLS))
    assert inv.services.lb.tls == LbTls(own / "certs" / "edge.pem", own / "certs" / "edge.key", 30)
    assert inv.services.lb.tls.own and inv.warnings == ()


def test_the_defaults_are_deploykits_ca_https_on_443_and_no_hsts(load_text, make_inventory) -> None:
    lb = load_text(make_inventory()).services.lb
    assert (lb.https_port, lb.hsts, lb.tls) == (443, 0, LbTls())
    assert not lb.tls.own


def where(text: str, needle: str, find_line: Callable[..., int]) -> str:
    return f"{F}:{find_line(text, needle)}: services/lb/tls"


@pytest.mark.parametrize(("spec", "key", "message"), [
    ("{certificate: certs/edge.pem}", "certificate", "'certificate' needs 'key' too: give both paths"),
    ("{key: certs/edge.key}", "key", "'key' needs 'certificate' too: give both paths"),
])
def test_one_path_without_the_other_is_an_error(own: Path, check_text, make_inventory, find_line, spec: str,
                                                key: str, message: str) -> None:
    text = make_inventory(services=f"services:\n  lb:\n    tls: {spec}\n")
    checked = check_text(text)
    assert checked.only_error().startswith(f"{where(text, 'tls:', find_line)}/{key}: {message}")


def test_missing_files_are_errors_naming_the_file_and_the_key(own: Path, check_text, make_inventory,
                                                              find_line) -> None:
    text = make_inventory(services=TLS)
    checked = check_text(text)
    at = where(text, "tls:", find_line)
    assert checked.errors == [
        f"{at}/certificate: {own / 'certs' / 'edge.pem'}: no such file; the certificate path is relative to the "
        "inventory file",
        f"{at}/key: {own / 'certs' / 'edge.key'}: no such file; the key path is relative to the inventory file",
    ]


@pytest.mark.parametrize(("cert", "key_text", "needle"), [
    ("not a certificate\n", None, "certs/edge.pem holds no PEM certificate"),
    (b"\x30\x82\x01\x0a\xff\xfe", None, "certs/edge.pem is not PEM text (binary DER?); convert it, e.g. openssl x509"),
    ("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", None,
     "certs/edge.pem certificate 1 of the file cannot be read"),
    (None, "just text\n", "certs/edge.key holds no PEM private key"),
    (None, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     "certs/edge.key holds a private key that cannot be read"),
])
def test_what_is_not_pem_is_an_error_never_a_traceback(own: Path, check_text, make_inventory, cert: str | bytes | None,
                                                       key_text: str | None, needle: str) -> None:
    write_pair(own)
    if isinstance(cert, bytes):
        (own / "certs" / "edge.pem").write_bytes(cert)
    elif cert is not None:
        (own / "certs" / "edge.pem").write_text(cert)
    if key_text is not None:
        (own / "certs" / "edge.key").write_text(key_text)
    error = check_text(make_inventory(services=TLS)).only_error()
    assert needle in error and "Traceback" not in error


def test_a_key_with_a_passphrase_is_an_error_with_the_fix(own: Path, check_text, make_inventory) -> None:
    _, key = write_pair(own)
    loaded = serialization.load_pem_private_key(key.encode(), None)
    locked = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.BestAvailableEncryption(b"secret"))
    (own / "certs" / "edge.key").write_bytes(locked)
    error = check_text(make_inventory(services=TLS)).only_error()
    assert "is encrypted with a passphrase" in error and "openssl pkey -in KEY -out KEY.plain" in error


def test_a_key_that_is_not_the_certificates_is_an_error(own: Path, check_text, make_inventory) -> None:
    write_pair(own, other_key=True)
    error = check_text(make_inventory(services=TLS)).only_error()
    assert "services/lb/tls/key:" in error
    assert "certs/edge.key is not the key of the certificate in" in error and "their public keys differ" in error


def test_a_chain_before_the_certificate_is_an_error(own: Path, check_text, make_inventory) -> None:
    write_pair(own, chain_first=True)
    assert "starts with a certificate of its chain; put the server's own certificate first" in \
        check_text(make_inventory(services=TLS)).only_error()


def test_a_certificate_for_another_domain_is_an_error(own: Path, check_text, make_inventory) -> None:
    write_pair(own, names=("other.example", "www.other.example"))
    error = check_text(make_inventory(services=TLS)).only_error()
    assert error.endswith("does not cover chirp.test (it names other.example, www.other.example); get a certificate "
                          "for chirp.test and its public names")


def test_public_names_not_covered_are_a_warning_and_wildcards_count(own: Path, check_text, make_inventory) -> None:
    services = TLS + "  dns: {names: [api, media]}\n"
    write_pair(own, names=("chirp.test", "api.chirp.test"))
    checked = check_text(make_inventory(services=services))
    assert checked.valid
    (warning,) = checked.warnings
    assert "does not cover www.chirp.test, media.chirp.test (it names chirp.test, api.chirp.test)" in warning
    write_pair(own, names=("chirp.test", "*.chirp.test"))
    assert check_text(make_inventory(services=services)).warnings == []


@pytest.mark.parametrize(("days", "warn_days", "needle"), [
    (10, None, "expires in 9 day(s)"),
    (45, 60, "expires in 44 day(s)"),
    (45, None, None),
])
def test_expiry_within_warn_days_is_a_warning(own: Path, check_text, make_inventory, days: int,
                                              warn_days: int | None, needle: str | None) -> None:
    write_pair(own, days=days)
    extra = "" if warn_days is None else f", warn_days: {warn_days}"
    checked = check_text(make_inventory(services=TLS.replace("key: certs/edge.key}", f"key: certs/edge.key{extra}}}")))
    assert checked.valid
    if needle is None:
        assert checked.warnings == []
    else:
        (warning,) = checked.warnings
        assert needle in warning and "renew it and plan again" in warning and "services/lb/tls/certificate" in warning


def test_an_expired_certificate_is_a_loud_warning(own: Path, check_text, make_inventory) -> None:
    write_pair(own, days=97, issued_days_ago=100)
    (warning,) = check_text(make_inventory(services=TLS)).warnings
    assert "EXPIRED on" in warning and "clients refuse it" in warning


@pytest.mark.parametrize(("services", "message"), [
    ("services:\n  lb: {https_port: 8404}", "port 8404 of lb.stats_port is also lb.https_port"),
    ("services:\n  lb: {hsts: -1}", "services/lb/hsts: input should be greater than or equal to 0"),
    ("services:\n  lb:\n    tls: {certificate: a, key: b, warn: 3}", "unknown key 'warn' (did you mean 'warn_days'?)"),
])
def test_bad_lb_settings_are_clear_errors(check_text, make_inventory, services: str, message: str) -> None:
    checked = check_text(make_inventory(services=services))
    assert any(message in e for e in checked.errors), checked.rendered


# --- the services, with the user's certificate -----------------------------------------------------------------


def test_the_edge_serves_the_users_chain_and_key_and_the_key_is_a_stored_secret(own: Path, load_text, make_inventory,
                                                                                capsys: pytest.CaptureFixture[str]
                                                                                ) -> None:
    chain, key = write_pair(own)
    inv = load_text(make_inventory(services=TLS))
    store = SecretStore(inv)
    ctx = ConfigContext(inv, plan_placement(inv), store.get)
    st = LB.state(ctx, inv.host("fra1-web-1"))
    pem = next(f for f in st.files if f.path == "/etc/haproxy/certs/chirp.test.pem")
    assert pem.content == chain + key
    assert store.names() == ["cache-password", "haproxy-stats-password", "keepalived-auth-fra1", tls.TLS_USER_KEY]
    assert store.existing(tls.TLS_USER_KEY).reveal() == key
    assert key.encode() not in store.path.read_bytes()  # stored encrypted
    assert store.redactor()(pem.content) == chain + "<redacted:tls-user-key>"
    # no deploykit CA: none made, none trusted by the dns hosts, none to print
    assert not any(n.startswith("tls-ca") for n in store.names())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["secrets", "ca", str(inv.path)])
    err = " ".join(capsys.readouterr().err.split())
    assert exited.value.code == 1 and "error: chirp-test serves its own certificate" in err


def test_a_changed_key_file_is_taken_at_the_next_plan(own: Path, load_text, make_inventory) -> None:
    write_pair(own)
    inv = load_text(make_inventory(services=TLS))
    first = SecretStore(inv).get(tls.TLS_USER_KEY).reveal()
    _, key = write_pair(own)
    assert SecretStore(inv).get(tls.TLS_USER_KEY).reveal() == key != first


def test_the_dns_hosts_trust_deploykits_ca_only_when_it_issues_the_certificate(own: Path, load_text, make_inventory,
                                                                                 base_hosts) -> None:
    hosts = dict(base_hosts)
    for site in ("fra1", "rbx1"):
        hosts[f"{site}-data-1"] = hosts[f"{site}-data-1"].replace("cache]", "cache, dns]")
    secrets = lambda name: Secret(name, "s3cr3t-" + name)  # noqa: E731

    def dns_files(inv: Inventory) -> dict[str, object]:
        ctx = ConfigContext(inv, plan_placement(inv), secrets)
        return {f.path: f for f in DNS.state(ctx, inv.host("fra1-data-1")).files}

    files = dns_files(load_text(make_inventory(hosts=hosts)))
    ca = files["/usr/local/share/ca-certificates/deploykit-chirp-test.crt"]
    assert (ca.content, ca.after_change, ca.mode) == ("s3cr3t-tls-ca-cert", "update-ca-certificates", "0644")  # type: ignore[attr-defined]
    write_pair(own)
    files = dns_files(load_text(make_inventory(hosts=hosts, services=TLS)))
    assert not any(p.endswith(".crt") for p in files)


def test_the_plan_warns_on_each_sites_first_load_balancer_when_the_certificate_nears_expiry(
        own: Path, load_text, make_inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    write_pair(own, days=60)
    inv = load_text(make_inventory(services=TLS))
    ctx = ConfigContext(inv, plan_placement(inv), lambda n: Secret(n, "x"))
    assert [LB.check(ctx, h) for h in inv.with_role("lb")] == [()] * 6
    at = datetime.now(UTC) + timedelta(days=40)
    monkeypatch.setattr(tls, "now", lambda: at)
    ctx = ConfigContext(inv, plan_placement(inv), lambda n: Secret(n, "x"))
    warned = {h.name: LB.check(ctx, h) for h in inv.with_role("lb")}
    assert sorted(h for h, w in warned.items() if w) == ["ams1-web-1", "fra1-web-1", "rbx1-web-1"]
    (line,) = warned["fra1-web-1"]
    assert line.startswith(f"the HTTPS certificate {own / 'certs' / 'edge.pem'} expires in 1") and "renew it" in line


def test_deploykits_own_certificate_never_warns(load_text, make_inventory) -> None:
    inv = load_text(make_inventory())
    ctx = ConfigContext(inv, plan_placement(inv), lambda n: Secret(n, "x"))
    assert all(LB.check(ctx, h) == () for h in inv.with_role("lb"))
