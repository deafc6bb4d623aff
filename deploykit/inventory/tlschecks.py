"""The inventory's `services.lb.tls` section: the user's own certificate and key, checked when it is loaded.

Both paths are relative to the inventory file (like `ssh.identity_file`). Errors (the file, the key path and
the fix): a file missing or unreadable, not PEM, a key with a passphrase, a key that is not the certificate's,
a certificate that does not name the domain. Warnings: the other public names (www, `services.dns.names`) not
covered, a certificate not valid yet, expired, or expiring within `warn_days`. The key is read to be checked
and forgotten: the model keeps its path, the plan reads it again as a secret (services/lb/tls.py).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from deploykit.inventory import schema
from deploykit.inventory.certificates import (
    CertificateError,
    CertificateFacts,
    certificates,
    expiry_problem,
    facts,
    key_matches,
    private_key,
)
from deploykit.inventory.model import LbTls
from deploykit.inventory.yamlsource import KeyPath, Source

TLS_PATH: KeyPath = ("services", "lb", "tls")
MAX_PEM_BYTES = 1024 * 1024


def check_tls(src: Source, file: Path, spec: schema.LbTlsSpec | None, domain: str | None,
              dns_names: list[str], now: datetime | None = None) -> LbTls:
    """The edge certificate's settings; problems recorded in `src`."""
    if spec is None:
        return LbTls()
    if spec.certificate is None and spec.key is None:
        return LbTls(warn_days=spec.warn_days)
    if spec.certificate is None or spec.key is None:
        given, missing = ("certificate", "key") if spec.key is None else ("key", "certificate")
        src.error(TLS_PATH + (given,), f"'{given}' needs '{missing}' too: give both paths (PEM files, relative to "
                  "the inventory), or neither and deploykit's own CA issues the certificate")
        return LbTls(warn_days=spec.warn_days)
    cert_path, key_path = _resolve(file, spec.certificate), _resolve(file, spec.key)
    tls = LbTls(cert_path, key_path, spec.warn_days)
    cert_text = _read(src, TLS_PATH + ("certificate",), cert_path, "certificate")
    key_text = _read(src, TLS_PATH + ("key",), key_path, "key")
    chain = key = None
    if cert_text is not None:
        try:
            chain = certificates(cert_text)
        except CertificateError as exc:
            src.error(TLS_PATH + ("certificate",), f"{cert_path} {exc}; give the certificate in PEM (then its "
                      "chain), e.g. an ACME client's fullchain.pem")
    if key_text is not None:
        try:
            key = private_key(key_text)
        except CertificateError as exc:
            src.error(TLS_PATH + ("key",), f"{key_path} {exc}")
    if chain is None:
        return tls
    if key is not None and not key_matches(chain[0], key):
        if any(key_matches(c, key) for c in chain[1:]):
            src.error(TLS_PATH + ("certificate",), f"{cert_path} starts with a certificate of its chain; put the "
                      "server's own certificate first, then the chain")
            return tls
        else:
            src.error(TLS_PATH + ("key",), f"{key_path} is not the key of the certificate in {cert_path} (their "
                      "public keys differ); give the key the certificate was issued for")
    leaf = facts(chain[0])
    named = ", ".join(leaf.dns_names) or "no DNS name"
    if domain is not None and not leaf.covers(domain):
        src.error(TLS_PATH + ("certificate",), f"{cert_path} does not cover {domain} (it names {named}); get a "
                  f"certificate for {domain} and its public names")
    elif domain is not None:
        others = leaf.uncovered([f"www.{domain}", *(f"{n}.{domain}" for n in dict.fromkeys(dns_names))])
        if others:
            src.warn(TLS_PATH + ("certificate",), f"{cert_path} does not cover {', '.join(others)} (it names "
                     f"{named}): browsers refuse HTTPS there; add them to the certificate")
    _check_dates(src, cert_path, leaf, spec.warn_days, now or datetime.now(UTC))
    return tls


def _check_dates(src: Source, path: Path, leaf: CertificateFacts, warn_days: int, now: datetime) -> None:
    where = TLS_PATH + ("certificate",)
    if leaf.not_before > now:
        src.warn(where, f"{path} is not valid before {leaf.not_before:%Y-%m-%d %H:%M} UTC: clients refuse it until "
                 "then")
    problem = expiry_problem(path, leaf, now, warn_days)
    if problem is not None:
        src.warn(where, problem)


def _resolve(file: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else file.parent / p


def _read(src: Source, where: KeyPath, path: Path, what: str) -> str | None:
    try:
        raw = path.read_bytes() if path.stat().st_size <= MAX_PEM_BYTES else None
    except FileNotFoundError:
        src.error(where, f"{path}: no such file; the {what} path is relative to the inventory file")
        return None
    except IsADirectoryError:
        src.error(where, f"{path} is a directory; give the {what}'s PEM file")
        return None
    except OSError as exc:
        src.error(where, f"{path} cannot be read ({exc.strerror}); deploykit reads it when it plans")
        return None
    if raw is None:
        src.error(where, f"{path} is larger than {MAX_PEM_BYTES} bytes: not a PEM {what}")
        return None
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        src.error(where, f"{path} is not PEM text (binary DER?); convert it, e.g. openssl "
                  f"{'x509' if what == 'certificate' else 'pkey'} -inform der -in FILE -out FILE.pem")
        return None
