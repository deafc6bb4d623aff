"""The deployment's `name`: a DNS-label-like slug, because it becomes part of paths and cluster names.

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
