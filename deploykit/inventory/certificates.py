"""Reading TLS certificates and keys (PEM): what a certificate names, when it expires, whether a key is its own.

Pure functions over PEM text (the `cryptography` package), shared by the inventory's checks of the user's own
certificate (`tlschecks.py`) and by the lb service's certificates from deploykit's CA (`services/lb/tls.py`).
Nothing here ever puts a key's text into a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, ip_address

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

CERTIFICATE_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
PRIVATE_KEY_MARK = re.compile(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")


class CertificateError(ValueError):
    """PEM text that is not what it should be (the message says what, never the text)."""


@dataclass(frozen=True)
class CertificateFacts:
    """What a leaf certificate says, as people and the checks need it."""

    subject: str  # its common name (or the whole subject when it has none)
    issuer: str
    dns_names: tuple[str, ...]  # subjectAltName DNS entries (the common name when there are none)
    ip_addresses: tuple[IPv4Address, ...]
    not_before: datetime  # aware, UTC
    not_after: datetime

    def days_left(self, now: datetime) -> int:
        """Whole days until it expires (negative: expired that many days ago)."""
        return (self.not_after - now).days

    def covers(self, name: str) -> bool:
        """Whether a client checking `name` accepts it (an exact name, or a `*.` wildcard for one label)."""
        name = name.lower().rstrip(".")
        for pattern in self.dns_names:
            pattern = pattern.lower().rstrip(".")
            if pattern == name:
                return True
            if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
                return True
        return False

    def uncovered(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if not self.covers(n)]


def expiry_problem(path: object, leaf: CertificateFacts, at: datetime, warn_days: int) -> str | None:
    """What to warn about the certificate file `path` at `at`: expired, or expiring within `warn_days`."""
    if leaf.not_after <= at:
        return (f"{path} EXPIRED on {leaf.not_after:%Y-%m-%d} ({-leaf.days_left(at)} day(s) ago): clients refuse "
                "it; renew it and plan again")
    days = leaf.days_left(at)
    if days < warn_days:
        return (f"{path} expires in {days} day(s), on {leaf.not_after:%Y-%m-%d} (warn_days: {warn_days}); renew "
                "it and plan again")
    return None


def certificates(pem: str) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order (the leaf first, then its chain)."""
    blocks = CERTIFICATE_BLOCK.findall(pem)
    if not blocks:
        raise CertificateError("holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block)")
    out = []
    for i, block in enumerate(blocks, start=1):
        try:
            out.append(x509.load_pem_x509_certificate(block.encode()))
        except ValueError as exc:
            raise CertificateError(f"certificate {i} of the file cannot be read ({_reason(exc)})") from exc
    return out


def private_key(pem: str) -> PrivateKeyTypes:
    """The private key of a PEM file without a passphrase."""
    match = PRIVATE_KEY_MARK.search(pem)
    if match is None:
        raise CertificateError("holds no PEM private key (a '-----BEGIN PRIVATE KEY-----' block)")
    if match.group(1) == "ENCRYPTED " or "Proc-Type: 4,ENCRYPTED" in pem:
        raise CertificateError("is encrypted with a passphrase, which HAProxy cannot be given; write it "
                               "without one (openssl pkey -in KEY -out KEY.plain) and keep that file private")
    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"holds a private key that cannot be read ({_reason(exc)})") from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for key types it does not know
        raise CertificateError(f"holds a private key of an unsupported kind ({type(exc).__name__})") from exc


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    """Whether `key` is the private half of the certificate's public key."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))


def facts(cert: x509.Certificate) -> CertificateFacts:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(a for a in san.get_values_for_type(x509.IPAddress) if isinstance(a, IPv4Address))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    subject = _common_name(cert.subject)
    if not dns and subject and _is_name(subject):
        dns = (subject,)  # no SAN: clients of old fell back on the common name (today's refuse it)
    return CertificateFacts(subject, _common_name(cert.issuer), dns, ips, cert.not_valid_before_utc,
                            cert.not_valid_after_utc)


def _common_name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def _is_name(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return "." in text and " " not in text
    return False


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
