"""The zone's SOA serial: the same on every dns host, and larger whenever the zone's content changes.

Every dns host is a primary loaded with the same zone by deploykit (no zone transfers), so nothing on the
servers decides the serial: deploykit does, once per run, and writes the same number to every host. Two
properties are wanted, and they pull apart:

- *deterministic*: every run over unchanged content gives the same serial, so a second plan shows no change
  and every host agrees (registries and monitoring compare the serials of all NS of a zone);
- *increasing* with every content change (RFC 1982 order), the convention anything reading serials relies
  on (a secondary someone adds later, monitoring that alerts on a serial going back).

A serial derived from the content alone (a hash) is deterministic but not increasing: it jumps down as often
as up, and going back to an earlier content would repeat an old serial. A clock alone (seconds now) is
increasing but not deterministic: every plan would change the zone. So deploykit keeps a stored counter
seeded by the clock, beside the inventory (`<inventory dir>/<name>.dns-serial`, like the secrets file: commit
it with the inventory): the digest of the zone content it last numbered, and that number. Same digest: the
stored serial. New digest: `max(stored + 1, seconds since the epoch)`, stored before it is used (under a
lock, written atomically). The clock keeps it increasing even when the file is lost (a fresh checkout, a
second operator): the next number is the current time, larger than any earlier one from the same scheme; the
`+ 1` keeps it increasing when changes come faster than once a second or the clock steps back. Seconds since
1970 fit the 32-bit serial until 2106 (YYYYMMDDnn would allow only 100 changes a day).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from deploykit.errors import DeploykitError
from deploykit.inventory.model import Inventory

SUFFIX = ".dns-serial"
MAX_SERIAL = 2**32 - 1


class SerialError(DeploykitError):
    """The stored zone serial cannot be used."""


def serial_path(inv: Inventory) -> Path:
    """Where the counter of this deployment lives: beside the inventory, named after the deployment."""
    path = inv.directory / f"{inv.name}{SUFFIX}"
    if path.parent != inv.directory:  # validation allows only slugs; an Inventory built otherwise is refused
        raise SerialError(f"the deployment name {inv.name!r} would put the zone serial outside {inv.directory}")
    return path


def next_serial(stored: int | None, now: float) -> int:
    """The serial for new content, after `stored` (None: nothing stored)."""
    serial = max(int(now), (stored or 0) + 1)
    if serial > MAX_SERIAL:
        raise SerialError(f"the zone serial would pass {MAX_SERIAL}; reset {SUFFIX} by hand (RFC 1982 wrap)")
    return serial


def zone_serial(path: Path, digest: str, clock: Callable[[], float] = time.time) -> int:
    """The serial of the zone content `digest`: the stored one if it numbered this content, else a new one
    (stored before it is returned)."""
    stored = _read(path)
    if stored is not None and stored[0] == digest:
        return stored[1]
    lock = path.with_name(path.name + ".lock")
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            stored = _read(path)  # another run may have numbered it meanwhile
            if stored is not None and stored[0] == digest:
                return stored[1]
            serial = next_serial(stored[1] if stored else None, clock())
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps({"version": 1, "digest": digest, "serial": serial}) + "\n", encoding="utf-8")
            os.replace(tmp, path)
            return serial
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SerialError(f"{path} is not a zone serial file ({exc}); delete it: the next serial then comes from "
                         "the clock") from exc
    if not (isinstance(data, dict) and isinstance(data.get("digest"), str) and isinstance(data.get("serial"), int)):
        raise SerialError(f"{path} is not a zone serial file; delete it: the next serial then comes from the clock")
    return data["digest"], data["serial"]
