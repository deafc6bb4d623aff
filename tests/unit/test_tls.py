"""HTTPS at the edge, deploykit's own CA: the CA and the edge certificate made by the secrets store's makers (once,
then the same every run; renewed near the expiry or when the names change), `deploykit secrets ca`, and no
private key in any plan output (printed, JSON, saved)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from fake_executor import online_plan
from rich.console import Console

from deploykit.apply.phases import desired_states
from deploykit.apply.planfile import save_plan
from deploykit.apply.render import plan_data, print_plan
from deploykit.cli import cli
from deploykit.execute.probe import FileFact, HostFacts
from deploykit.inventory import Inventory, load_inventory
from deploykit.inventory.certificates import certificates, facts, key_matches, private_key
from deploykit.plan import plan_placement
from deploykit.secret import PRIVATE_KEY_REDACTED, Redactor, Secret
from deploykit.secrets_store import SecretStore
from deploykit.services.lb import tls
from deploykit.services.lb.state import HAPROXY_CFG

LAB = Path(__file__).resolve().parents[2] / "inventories" / "lab.yml"
CERT = "/etc/haproxy/certs/chirp.lab.pem"
CA_FILE = "/usr/local/share/ca-certificates/deploykit-chirp-lab.crt"


@pytest.fixture()
def inv(lab_copy: Inventory) -> Inventory:
    return lab_copy


def leaf(pem: str) -> x509.Certificate:
    return certificates(pem)[0]


def later(monkeypatch: pytest.MonkeyPatch, days: int) -> None:
    at = datetime.now(UTC) + timedelta(days=days)
    monkeypatch.setattr(tls, "now", lambda: at)


# --- the CA and the edge certificate ---------------------------------------------------------------------------


def test_the_ca_and_the_edge_certificate_are_made_once_and_then_the_same(inv: Inventory) -> None:
    store = SecretStore(inv)
    edge = store.get(tls.TLS_EDGE_CERT).reveal()
    assert store.names() == [tls.TLS_CA_CERT, tls.TLS_CA_KEY, tls.TLS_EDGE_CERT, tls.TLS_EDGE_KEY]
    again = SecretStore(inv)  # the next run: read back, judged current, nothing made or written
    before = again.path.read_bytes()
    assert again.get(tls.TLS_EDGE_CERT).reveal() == edge
    assert {n: again.get(n).reveal() for n in store.names()} == {n: store.get(n).reveal() for n in store.names()}
    assert again.path.read_bytes() == before
    raw = store.path.read_bytes()
    assert b"PRIVATE KEY" not in raw and b"CERTIFICATE" not in raw  # stored encrypted like every secret


def test_the_edge_certificate_names_the_public_names_and_vips_and_is_the_cas(inv: Inventory) -> None:
    store = SecretStore(inv)
    edge, ca = leaf(store.get(tls.TLS_EDGE_CERT).reveal()), leaf(store.get(tls.TLS_CA_CERT).reveal())
    edge.verify_directly_issued_by(ca)
    got = facts(edge)
    assert got.dns_names == ("chirp.lab", "www.chirp.lab") and got.subject == "chirp.lab"
    assert got.ip_addresses == (IPv4Address("10.77.1.100"), IPv4Address("10.77.2.100"), IPv4Address("10.77.3.100"))
    assert key_matches(edge, private_key(store.get(tls.TLS_EDGE_KEY).reveal()))
    assert isinstance(private_key(store.get(tls.TLS_CA_KEY).reveal()), ec.EllipticCurvePrivateKey)
    now = datetime.now(UTC)
    assert 396 <= got.days_left(now) <= 397
    assert 3649 <= facts(ca).days_left(now) <= 3650 and facts(ca).subject == "deploykit CA for chirp-lab"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not edge.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = edge.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in usage


def test_the_edge_certificate_is_renewed_within_30_days_of_its_expiry(inv: Inventory,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    first = SecretStore(inv).get(tls.TLS_EDGE_CERT).reveal()
    ca = SecretStore(inv).get(tls.TLS_CA_CERT).reveal()
    later(monkeypatch, 365)  # 32 days left: kept
    assert SecretStore(inv).get(tls.TLS_EDGE_CERT).reveal() == first
    later(monkeypatch, 368)  # 29 days left: renewed, with the same key and by the same CA
    store = SecretStore(inv)
    renewed = store.get(tls.TLS_EDGE_CERT).reveal()
    assert renewed != first and store.get(tls.TLS_CA_CERT).reveal() == ca
    assert facts(leaf(renewed)).not_after > facts(leaf(first)).not_after
    assert key_matches(leaf(renewed), private_key(store.get(tls.TLS_EDGE_KEY).reveal()))
    assert SecretStore(inv).get(tls.TLS_EDGE_CERT).reveal() == renewed  # stored: the next run keeps it


def test_a_new_public_name_issues_the_edge_certificate_again(inv: Inventory) -> None:
    first = SecretStore(inv).get(tls.TLS_EDGE_CERT).reveal()
    inv.path.write_text(inv.path.read_text().replace("dns: {ttl: 30}", "dns: {ttl: 30, names: [api]}"))
    grown = load_inventory(inv.path)
    again = SecretStore(grown).get(tls.TLS_EDGE_CERT).reveal()
    assert again != first and facts(leaf(again)).dns_names == ("chirp.lab", "www.chirp.lab", "api.chirp.lab")


def test_the_ca_is_issued_again_with_its_own_key_near_its_expiry(inv: Inventory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = SecretStore(inv)
    ca, ca_key = store.get(tls.TLS_CA_CERT).reveal(), store.get(tls.TLS_CA_KEY).reveal()
    later(monkeypatch, 3630)
    store = SecretStore(inv)
    edge = leaf(store.get(tls.TLS_EDGE_CERT).reveal())
    renewed = leaf(store.get(tls.TLS_CA_CERT).reveal())
    assert store.get(tls.TLS_CA_KEY).reveal() == ca_key and renewed != leaf(ca)
    assert renewed.subject == leaf(ca).subject  # clients trusting the old CA certificate keep working
    edge.verify_directly_issued_by(renewed)
    edge.verify_directly_issued_by(leaf(ca))


def test_a_value_that_is_not_a_key_is_replaced_by_a_key(inv: Inventory) -> None:
    store = SecretStore(inv)
    store._values[tls.TLS_EDGE_KEY] = "a-password-an-old-deploykit-generated"  # noqa: SLF001 (a damaged store)
    key = store.get(tls.TLS_EDGE_KEY).reveal()
    assert isinstance(private_key(key), ec.EllipticCurvePrivateKey)


def test_the_redactor_hides_keys_not_certificates(inv: Inventory) -> None:
    store = SecretStore(inv)
    cert, key = store.get(tls.TLS_EDGE_CERT).reveal(), store.get(tls.TLS_EDGE_KEY).reveal()
    text = store.redactor()(cert + key)
    assert text == cert + "<redacted:tls-edge-key>"
    other = tls.new_key()  # e.g. the key a live file still holds: known to no store
    assert store.redactor()(f"before\n{other}after") == f"before\n{PRIVATE_KEY_REDACTED}\nafter"


@pytest.mark.parametrize("pem", [
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----",
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----",
    "-----BEGIN EC PRIVATE KEY-----\nMHcC\nAoGB",  # cut short
])
def test_any_pem_private_key_is_redacted(pem: str) -> None:
    out = Redactor([Secret("x", "y")])(f"a\n{pem}\nb")
    assert "PRIVATE KEY-----" not in out and "MI" not in out and "b3Bl" not in out and "AoGB" not in out


def test_secrets_ca_prints_the_ca_certificate(inv: Inventory) -> None:
    result = CliRunner().invoke(cli, ["secrets", "ca", str(inv.path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == SecretStore(inv).get(tls.TLS_CA_CERT).reveal()
    assert result.stdout.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in result.stdout


# --- no private key in any plan output -------------------------------------------------------------------------


def test_no_private_key_in_the_printed_json_or_saved_plan(inv: Inventory, tmp_path: Path) -> None:
    """The lab planned with the real store (its makers), against fresh hosts and against a load balancer whose
    live certificate file holds another key (one no store knows any more)."""
    store = SecretStore(inv)
    states = desired_states(inv, plan_placement(inv), store.get)
    old_key = tls.new_key()
    live = HostFacts(files={CERT: FileFact(0o600, "root", "root", f"old chain\n{old_key}".encode())})
    plan = online_plan(inv, states, facts={"fra1-web-1": live}, redact=store.redactor())
    key = store.get(tls.TLS_EDGE_KEY).reveal()
    console = Console(file=io.StringIO(), width=200, record=True)
    print_plan(console, plan, show_diffs=True)
    printed = console.export_text()
    data = json.dumps(plan_data(plan), indent=2)
    saved = tmp_path / "plan.json"
    save_plan(plan, saved)
    for text in (printed, data, saved.read_text()):
        assert "PRIVATE KEY" not in text
        assert key.splitlines()[1] not in text and old_key.splitlines()[1] not in text
        assert store.get(tls.TLS_CA_KEY).reveal().splitlines()[1] not in text
    assert f"+ file {CERT}" in printed and "<redacted:tls-edge-key>" in printed
    diff = next(c.diff for r in plan.hosts["fra1-web-1"].roles for c in r.files if c.file.path == CERT)
    assert f"-{PRIVATE_KEY_REDACTED}" in diff and "+<redacted:tls-edge-key>" in diff
    assert "BEGIN CERTIFICATE" in diff  # the certificate is public: its change shows
    # the dns hosts trust the CA (public, shown), and the certificate file comes before haproxy.cfg
    assert any(c.file.path == CA_FILE for r in plan.hosts["fra1-data-1"].roles for c in r.files)
    lb_files = [c.file.path for r in plan.hosts["ams1-web-1"].roles for c in r.files if r.role == "lb"]
    assert lb_files.index(CERT) < lb_files.index(HAPROXY_CFG)


def test_a_second_plan_of_the_same_inventory_wants_the_same_certificate(inv: Inventory) -> None:
    first = desired_states(inv, plan_placement(inv), SecretStore(inv).get)
    again = desired_states(inv, plan_placement(inv), SecretStore(inv).get)

    def cert(states: dict[str, list]) -> str:  # type: ignore[type-arg]
        return next(f.content for s in states["fra1-web-1"] for f in s.files if f.path == CERT)

    assert cert(first) == cert(again)


# --- a client trusting the CA (the lab's smoke test and e2e tests), against a local HTTPS server ---------------


def test_the_smoke_client_trusts_the_ca_by_name_and_by_vip_and_sees_redirects(inv: Inventory, tmp_path: Path) -> None:
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from deploykit.lab.smoke import client_context, http, request

    store = SecretStore(inv)
    pem = tmp_path / "edge.pem"
    pem.write_text(store.get(tls.TLS_EDGE_CERT).reveal() + store.get(tls.TLS_EDGE_KEY).reveal())
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pem)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            down = self.path == "/down"  # as HAProxy answers with no server up
            body = (b"<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this "
                    b"request.\n</body></html>\n") if down else json.dumps({"host": self.headers.get("Host")}).encode()
            self.send_response(503 if down else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Redirect(Handler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(308)
            self.send_header("Location", f"https://{self.headers.get('Host')}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    https_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    https_server.socket = server_tls.wrap_socket(https_server.socket, server_side=True)
    plain_server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for s in (https_server, plain_server):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        port, plain = https_server.server_address[1], plain_server.server_address[1]
        trusted = client_context(inv)  # deploykit's CA, from the inventory's store
        assert http("GET", f"https://chirp.lab:{port}/healthz", context=trusted, connect_to="127.0.0.1") == (
            200, {"host": f"chirp.lab:{port}"})
        # a VIP as the URL's host (the e2e tests' https://<VIP>/): its address is in the certificate
        assert http("GET", f"https://10.77.2.100:{port}/healthz", context=trusted, connect_to="127.0.0.1")[0] == 200
        # the system's CAs do not know deploykit's: refused, reported as no answer, and why
        assert http("GET", f"https://chirp.lab:{port}/healthz", connect_to="127.0.0.1")[0] == 0
        refused = request("GET", f"https://chirp.lab:{port}/healthz", connect_to="127.0.0.1")
        assert refused.status == 0 and "CERTIFICATE_VERIFY_FAILED" in refused.error, refused
        # a failed answer keeps the start of its body, whitespace folded: HAProxy's page or the app's JSON error
        down = request("GET", f"https://chirp.lab:{port}/down", context=trusted, connect_to="127.0.0.1")
        assert (down.status, down.body) == (503, None)
        assert down.error == ("<html><body><h1>503 Service Unavailable</h1> No server is available to handle this "
                              "request. </body></html>"), down
        # a name the certificate does not hold: refused as well
        assert http("GET", f"https://other.test:{port}/", context=trusted, connect_to="127.0.0.1")[0] == 0
        moved = request("GET", f"http://chirp.lab:{plain}/healthz?x=1", connect_to="127.0.0.1")
        assert (moved.status, moved.location) == (308, f"https://chirp.lab:{plain}/healthz?x=1")
    finally:
        for s in (https_server, plain_server):
            s.shutdown()
            s.server_close()
