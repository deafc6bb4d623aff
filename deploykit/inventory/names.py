"""The deployment's `name` and `domain`.

`name` is a DNS-label-like slug, because it becomes part of paths and cluster names.

It names the secrets file (`<inventory dir>/<name>.secrets`) and its key (`~/.config/deploykit/keys/<name>.key`),
the etcd cluster token, the Redis master and the Patroni scope; a `/` or `..` in it would lead those paths
out of their directories.
"""

from __future__ import annotations

import re
import unicodedata

NAME = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
NAME_RULE = ("use lower-case letters, digits and '-', starting with a letter and not ending with '-', at most 63 "
             "characters (it names the secrets files, the etcd cluster, the Redis master and the Patroni scope)")


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key putting `lb-2` before `lb-10` (numbers compared as numbers): the order people read host
    names in, and the order of every host list deploykit derives (VRRP priorities, placement, output)."""
    parts = tuple((1, int(part)) if part.isdigit() else (0, part) for part in _DIGITS.split(name) if part)
    return parts, name  # app-01 and app-1 are distinct names: the text decides between them


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a deployment name (with a suggested one), or None if it can."""
    if NAME.match(name):
        return None
    slug = slugify(name)
    fix = f"; e.g. '{slug}'" if slug else ""
    return f"'{name}' is not a valid deployment name: {NAME_RULE}{fix}"


def slugify(text: str) -> str | None:
    """The nearest valid name (`Zürich Prod` -> `zurich-prod`), or None if nothing of it is usable."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    slug = re.sub(r"[^a-z0-9]+", "-", plain)
    slug = re.sub(r"^[^a-z]+", "", slug)[:63].rstrip("-")
    return slug if NAME.match(slug) else None


# The inventory's `domain`: the name the load balancers serve and the zone the dns role is authoritative for.
LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN_MAX = 253  # characters of a name in its text form, without the final dot (RFC 1035's 255 octets)
DOMAIN_RULE = "is not a valid DNS name (lower-case, like chirp.example)"


def domain_problem(domain: str) -> str | None:
    """Why `domain` cannot be the deployment's DNS name (with a suggested one), or None if it can."""
    why = _domain_fault(domain)
    if why is None:
        return None
    fix = suggest_domain(domain)
    return f"'{domain}' {DOMAIN_RULE}: {why}" + (f"; e.g. '{fix}'" if fix and fix != domain else "")


def _domain_fault(domain: str) -> str | None:
    """What is wrong with `domain` (every fault, most basic first), or None."""
    faults: list[str] = []
    if domain.endswith("."):
        faults.append("write it without the final '.'")
        domain = domain[:-1]
    bad = sorted({c for c in domain if not (c.isascii() and (c.isalnum() or c in "-."))})
    if bad:
        faults.append(f"{', '.join(repr(c) for c in bad)} not allowed (letters, digits, '-' and '.' only)")
    if domain != domain.lower():
        faults.append("use lower-case letters")
    if len(domain) > DOMAIN_MAX:
        faults.append(f"it has {len(domain)} characters, at most {DOMAIN_MAX} are allowed")
    labels = domain.split(".")
    if any(not label for label in labels):
        faults.append("it has an empty label (two dots in a row, or a dot at the start)")
    faults += [f"the label '{label[:16]}...' has {len(label)} characters, at most 63 are allowed"
               for label in labels if len(label) > 63]
    faults += [f"the label '{label}' starts or ends with '-'" for label in labels if label[:1] == "-" or
               label[-1:] == "-"]
    if not faults and labels[-1].isdigit():
        faults.append("its last label is a number (an IP address is not a domain)")
    return ", ".join(faults) if faults else None


def suggest_domain(domain: str) -> str | None:
    """The nearest valid domain (`Chirp_Test.` -> `chirp-test`), or None if nothing of it is usable."""
    plain = unicodedata.normalize("NFKD", domain).encode("ascii", "ignore").decode().lower().rstrip(".")
    labels = [re.sub(r"[^a-z0-9-]+", "-", label).strip("-")[:63].strip("-") for label in plain.split(".")]
    fixed = ".".join(label for label in labels if label)
    return fixed if fixed and _domain_fault(fixed) is None else None
