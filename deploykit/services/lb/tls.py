"""The edge certificate HAProxy serves on the HTTPS port: the user's own, or one from deploykit's CA.

Without `services.lb.tls` in the inventory, deploykit is a small CA of its own for the deployment: its key and
certificate, and the edge key and certificate it issues, are secrets in the encrypted store (made by the
makers below, each the first time it is asked for, and kept):

    tls-ca-key      the CA's private key (EC P-256)
    tls-ca-cert     the CA's certificate (10 years; public: `deploykit secrets ca INVENTORY` prints it)
    tls-edge-key    the edge certificate's private key (EC P-256)
    tls-edge-cert   the edge certificate (397 days): the domain, www and `services.dns.names` under it, and the
                    sites' VIPs (so `curl --cacert ca.pem https://<VIP>/` works too)

The edge certificate is issued again when it is within RENEW_DAYS of its expiry, when the names or VIPs it must
cover change, or when it is not the CA's (the plan then shows the new file); otherwise every plan finds the
same one and changes nothing. The CA's certificate is issued again (same key, same name: clients that trust the
old one keep working) within RENEW_DAYS of its own expiry.

With `services.lb.tls: {certificate, key}`, the user's files (checked when the inventory is loaded) are read
when the plan is made; the key is copied into the store as `tls-user-key`, so that it is a secret like the
others: redacted from every plan, saved plan and log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploykit.errors import DeploykitError
from deploykit.inventory.certificates import (
    CertificateError,
    certificates,
    expiry_problem,
    facts,
    key_matches,
    private_key,
)
from deploykit.inventory.model import Inventory
from deploykit.secret import Secret
from deploykit.secrets_store import SecretMaker, SecretsError, SecretStore, register_maker
from deploykit.services.contract import ConfigContext

TLS_SECRETS = "tls-*"
TLS_CA_KEY = "tls-ca-key"
TLS_CA_CERT = "tls-ca-cert"
TLS_EDGE_KEY = "tls-edge-key"
TLS_EDGE_CERT = "tls-edge-cert"
TLS_USER_KEY = "tls-user-key"

CA_DAYS = 3650
LEAF_DAYS = 397  # the longest validity browsers accept
RENEW_DAYS = 30
BACKDATE = timedelta(hours=1)  # a client whose clock is a little behind accepts a certificate issued just now

CERT_DIR = "/etc/haproxy/certs"


def now() -> datetime:
    """The makers' clock (a test sets another)."""
    return datetime.now(UTC)


class TlsError(DeploykitError):
    """The edge certificate cannot be made or read."""


@dataclass(frozen=True, slots=True)
class EdgeCertificate:
    """What HAProxy serves: the certificate and its chain (public), and the key (a secret)."""

    chain: str = field(repr=False)  # PEM, the server's certificate first (public, but long)
    key: Secret

    def pem(self) -> str:
        """HAProxy's one file: the chain, then the key."""
        return self.chain.rstrip("\n") + "\n" + self.key.reveal()


def cert_path(domain: str) -> str:
    return f"{CERT_DIR}/{domain}.pem"


def edge_names(inv: Inventory) -> tuple[str, ...]:
    """The public names the edge certificate covers: the domain, www and `services.dns.names` under it."""
    labels = ("www", *inv.services.dns.names)
    return (inv.domain, *dict.fromkeys(f"{label}.{inv.domain}" for label in labels))


def edge_addresses(inv: Inventory) -> tuple[IPv4Address, ...]:
    """The sites' VIPs, in `sites:` order."""
    return tuple(s.vip for s in inv.sites.values() if s.vip is not None)


def edge_certificate(ctx: ConfigContext) -> EdgeCertificate:
    """The edge certificate of this run (read or made once for every lb host)."""
    return ctx.shared("lb.edge-certificate", lambda: _edge_certificate(ctx))


def _edge_certificate(ctx: ConfigContext) -> EdgeCertificate:
    tls = ctx.inv.services.lb.tls
    if tls.certificate is None:
        return EdgeCertificate(ctx.secret(TLS_EDGE_CERT).reveal(), ctx.secret(TLS_EDGE_KEY))
    try:
        chain = tls.certificate.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsError(f"{tls.certificate} (services.lb.tls.certificate) cannot be read now: {exc}") from exc
    return EdgeCertificate(chain, ctx.secret(TLS_USER_KEY))


def ca_certificate(ctx: ConfigContext) -> Secret | None:
    """deploykit's CA certificate, for the hosts that must trust it; None when the user's certificate is served."""
    if ctx.inv.services.lb.tls.own:
        return None
    return ctx.shared("lb.ca-certificate", lambda: ctx.secret(TLS_CA_CERT))


def edge_expiry_warning(ctx: ConfigContext) -> str | None:
    """The user's certificate close to its expiry (`services.lb.tls.warn_days`), for the plan; deploykit renews
    its own RENEW_DAYS before."""
    tls = ctx.inv.services.lb.tls
    if tls.certificate is None:
        return None
    path, warn_days = tls.certificate, tls.warn_days
    return ctx.shared("lb.edge-expiry", lambda: _expiry_warning(path, warn_days))


def _expiry_warning(path: Path, warn_days: int) -> str | None:
    try:
        leaf = facts(certificates(path.read_text(encoding="ascii"))[0])
    except (OSError, UnicodeDecodeError, CertificateError) as exc:
        return f"the HTTPS certificate {path} cannot be read now ({exc})"
    problem = expiry_problem(path, leaf, now(), warn_days)
    return None if problem is None else f"the HTTPS certificate {problem}"


def deployment_ca(inv: Inventory, store: SecretStore) -> str:
    """The CA certificate (PEM) a client of this deployment trusts (`deploykit secrets ca`)."""
    if inv.services.lb.tls.own:
        raise TlsError(f"{inv.name} serves its own certificate ({inv.services.lb.tls.certificate}); deploykit's "
                       "CA issues nothing here: clients trust that certificate's issuer")
    return store.get(TLS_CA_CERT).reveal()


# --- making them (pure but for the clock and the random keys) -------------------------------------------------


def new_key() -> str:
    """A new private key (EC P-256), PEM (PKCS#8)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def issue_ca(key_pem: str, name: str, at: datetime, days: int = CA_DAYS) -> str:
    key = _issuer_key(key_pem)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deploykit"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"deploykit CA for {name}")])
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE).not_valid_after(at + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def issue_edge(ca_key_pem: str, ca_cert_pem: str, key_pem: str, names: tuple[str, ...],
               addresses: tuple[IPv4Address, ...], at: datetime, days: int = LEAF_DAYS) -> str:
    ca_key = _issuer_key(ca_key_pem)
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    public = _issuer_key(key_pem).public_key()
    san: list[x509.GeneralName] = [*(x509.DNSName(n) for n in names), *(x509.IPAddress(a) for a in addresses)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(at - BACKDATE)
        .not_valid_after(min(at + timedelta(days=days), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def ca_is_current(cert_pem: str, key_pem: str, at: datetime) -> bool:
    """A CA certificate of this key, not within RENEW_DAYS of its expiry."""
    try:
        (cert, *_) = certificates(cert_pem)
        key = private_key(key_pem)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (CertificateError, x509.ExtensionNotFound):
        return False
    return constraints.ca and key_matches(cert, key) and facts(cert).days_left(at) > RENEW_DAYS


def edge_is_current(cert_pem: str, ca_cert_pem: str, key_pem: str, names: tuple[str, ...],
                    addresses: tuple[IPv4Address, ...], at: datetime) -> bool:
    """Issued by this CA for this key, covering exactly these names and addresses, not near its expiry."""
    try:
        (cert, *_) = certificates(cert_pem)
        (ca, *_) = certificates(ca_cert_pem)
        key = private_key(key_pem)
        cert.verify_directly_issued_by(ca)
    except (CertificateError, ValueError, TypeError, InvalidSignature):
        return False
    got = facts(cert)
    return (key_matches(cert, key) and set(got.dns_names) == set(names) and set(got.ip_addresses) == set(addresses)
            and got.not_before <= at and got.days_left(at) > RENEW_DAYS)


def _issuer_key(pem: str) -> CertificateIssuerPrivateKeyTypes:
    key = private_key(pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("a key deploykit made is not an EC key: the secrets store was edited by hand")
    return key


# --- the store's makers -----------------------------------------------------------------------------------------


def _make_key(store: SecretStore, name: str, current: str | None) -> str:
    if current is not None:
        try:
            _issuer_key(current)
            return current
        except (CertificateError, TlsError):
            pass  # not a key (e.g. a password generated under this name by an older deploykit): make one
    return new_key()


def _make_ca_cert(store: SecretStore, name: str, current: str | None) -> str:
    key, at = store.get(TLS_CA_KEY).reveal(), now()
    if current is not None and ca_is_current(current, key, at):
        return current
    return issue_ca(key, store.inv.name, at)


def _make_edge_cert(store: SecretStore, name: str, current: str | None) -> str:
    ca_key, ca_cert = store.get(TLS_CA_KEY).reveal(), store.get(TLS_CA_CERT).reveal()
    key = store.get(TLS_EDGE_KEY).reveal()
    names, addresses, at = edge_names(store.inv), edge_addresses(store.inv), now()
    if current is not None and edge_is_current(current, ca_cert, key, names, addresses, at):
        return current
    return issue_edge(ca_key, ca_cert, key, names, addresses, at)


def _make_user_key(store: SecretStore, name: str, current: str | None) -> str:
    """The user's key file as it is now (the file is what counts; the store keeps the copy to redact it)."""
    path = store.inv.services.lb.tls.key
    if path is None:
        raise SecretsError(f"{name}: the inventory names no key file (services.lb.tls.key)")
    try:
        text = path.read_text(encoding="ascii")
        private_key(text)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not PEM text"
        raise SecretsError(f"{path} (services.lb.tls.key) cannot be read now ({why})") from exc
    except CertificateError as exc:
        raise SecretsError(f"{path} (services.lb.tls.key) {exc}") from exc
    return text.strip() + "\n"


for _maker in (SecretMaker(TLS_CA_KEY, _make_key), SecretMaker(TLS_CA_CERT, _make_ca_cert, public=True),
               SecretMaker(TLS_EDGE_KEY, _make_key), SecretMaker(TLS_EDGE_CERT, _make_edge_cert, public=True),
               SecretMaker(TLS_USER_KEY, _make_user_key)):
    register_maker(_maker)
