"""Host facts last read from the hosts (`HostFact`, e.g. public WireGuard keys), kept beside the inventory.

File: `<inventory dir>/<deployment name>.facts` (JSON, host -> fact -> value). Nothing in it is secret:
services only declare public values as facts. It lets a run that cannot read a host (unreachable, outside
--limit) still compute the other hosts' configs with that host's last known values, e.g. keep a peer in every
mesh config while that peer is down. Commit it with the inventory, like the secrets file; lost, it is rebuilt
by the next full plan.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from deploykit.errors import DeploykitError
from deploykit.inventory.model import Inventory

SUFFIX = ".facts"

Facts = dict[str, dict[str, str]]


class FactsError(DeploykitError):
    """The stored facts cannot be read or written."""


def facts_path(inv: Inventory) -> Path:
    path = inv.directory / f"{inv.name}{SUFFIX}"
    if path.parent != inv.directory:
        raise FactsError(f"the deployment name {inv.name!r} would put the facts file outside {inv.directory}")
    return path


def load_facts(inv: Inventory) -> Facts:
    """The stored facts of the inventory's hosts (hosts no longer in it are left out)."""
    path = facts_path(inv)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FactsError(f"{path}: cannot be read ({exc}); delete it and run `deploykit plan` to rebuild it") from exc
    if not isinstance(data, dict):
        raise FactsError(f"{path}: not a mapping of hosts; delete it and run `deploykit plan` to rebuild it")
    names = {h.name for h in inv.hosts}
    return {h: {str(k): str(v) for k, v in f.items()} for h, f in data.items() if h in names and isinstance(f, dict)}


def merge_facts(stored: Mapping[str, Mapping[str, str]], read: Mapping[str, Mapping[str, str]],
                keep: frozenset[str]) -> Facts:
    """What a run knows: the facts just read, and for facts a host did not report, its stored ones (only the
    names in `keep`: facts that describe the host, not a moment)."""
    out: Facts = {h: {k: v for k, v in f.items() if k in keep} for h, f in stored.items()}
    for host, values in read.items():
        out.setdefault(host, {}).update(values)
    return out


def save_facts(inv: Inventory, facts: Mapping[str, Mapping[str, str]], keep: frozenset[str]) -> None:
    """Store the `keep` facts (written atomically; unchanged content is not rewritten)."""
    path = facts_path(inv)
    data = {h: {k: v for k, v in sorted(f.items()) if k in keep and v} for h, f in sorted(facts.items())}
    data = {h: f for h, f in data.items() if f}
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    try:
        if path.exists() and path.read_text() == text:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise FactsError(f"{path}: cannot be written ({exc.strerror})") from exc
