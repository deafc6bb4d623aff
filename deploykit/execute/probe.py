"""One shell command per host that reports everything the diff needs; and its parser.

The command prints the managed files and directories (mode, owner and content, in one tar), each package's dpkg
status, each unit's enabled/active state and the services' host facts. One round trip per host, and a handful
of processes on it, whatever the number of items.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shlex
import tarfile
from dataclasses import dataclass, field

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9_./@:+-]+$")
_UNIT = re.compile(r"^[A-Za-z0-9_.@:-]+$")
_PKG = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_FACT = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class ProbeError(ValueError):
    """The probe's output could not be understood."""


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ProbeSpec:
    files: tuple[str, ...] = ()
    directories: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    units: tuple[str, ...] = ()
    facts: tuple[tuple[str, str], ...] = ()  # (name, sh script printing the value) per service HostFact

    def __post_init__(self) -> None:
        for name, _ in self.facts:
            if not _FACT.match(name):
                raise ValueError(f"unsafe fact name: {name!r}")
        for p in (*self.files, *self.directories):
            if not _SAFE_PATH.match(p):
                raise ValueError(f"unsafe path for the probe: {p!r}")
        for u in self.units:
            if not _UNIT.match(u):
                raise ValueError(f"unsafe unit name: {u!r}")
        for pkg in self.packages:
            if not _PKG.match(pkg):
                raise ValueError(f"unsafe package name: {pkg!r}")


@dataclass(frozen=True)
class FileFact:
    mode: int
    owner: str
    group: str
    content: bytes


@dataclass
class HostFacts:
    files: dict[str, FileFact | None] = field(default_factory=dict)
    directories: dict[str, tuple[int, str, str] | None] = field(default_factory=dict)
    packages: dict[str, bool] = field(default_factory=dict)  # installed?
    units: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (is-enabled, is-active)
    facts: dict[str, str] = field(default_factory=dict)  # HostFact name -> value ("" if none)
    fact_errors: dict[str, str] = field(default_factory=dict)  # HostFact name -> what its script printed

    def fingerprint(self) -> str:
        """A hash of everything observed: a saved plan is stale once this changes."""
        data = {
            "files": {p: None if f is None else [f.mode, f.owner, f.group, sha256(f.content)]
                      for p, f in sorted(self.files.items())},
            "dirs": {p: list(d) if d else None for p, d in sorted(self.directories.items())},
            "packages": dict(sorted(self.packages.items())),
            "units": {u: list(s) for u, s in sorted(self.units.items())},
            "facts": dict(sorted(self.facts.items())),
        }
        return sha256(json.dumps(data, sort_keys=True))


def probe_command(spec: ProbeSpec) -> str:
    """A POSIX sh script printing `@@` records; exits 0 even when things are absent.

    It starts few processes, whatever the number of items (on a lab of 51 servers sharing two CPUs the per-item
    commands were the no-op plan's main cost: 0.25 s of `systemctl` per host for 15 units, 0.1 s of `stat` and
    `base64` for 30 files): every managed file and directory in one gzipped tar (dereferencing symlinks and hard
    links, so each member carries its own mode, owner and content), every unit in one `systemctl show`, every
    package in one `dpkg-query`. tar, gzip, base64 and systemctl are on every Debian server (Essential packages
    and systemd), bare ones too.
    """
    q = shlex.quote
    lines = ["export LC_ALL=C"]
    paths = (*spec.files, *spec.directories)
    if paths:
        # tar exits 2 for a missing path and archives the rest: missing is absent, not an error
        lines.append(
            "if command -v tar >/dev/null 2>&1; then printf '@@TAR '; tar -c -z -P -h --hard-dereference "
            f"--no-recursion -f - -- {' '.join(q(p) for p in paths)} 2>/dev/null | base64 -w0; echo; "
            "else echo '@@NOTAR'; fi"
        )
    if spec.packages:
        pkgs = " ".join(q(p) for p in spec.packages)
        lines.append(f"dpkg-query -W -f='@@PKG ${{Package}} ${{Status}}\\n' {pkgs} 2>/dev/null")
    if spec.units:
        # one block of KEY=value lines per unit, in the order given, blank lines between blocks
        lines.append("echo @@UNITS; systemctl show -p Id,UnitFileState,ActiveState "
                     f"{' '.join(q(u) for u in spec.units)} 2>/dev/null; echo; echo @@UNITS-END")
    for name, script in spec.facts:
        # The script's last line is the value; if it fails, its output (stderr too) says why.
        lines.append(
            f"v=$( ( {script} ) 2>&1 ); if [ $? -eq 0 ]; then printf '@@FACT %s %s\\n' {name} "
            f"\"$(printf '%s\\n' \"$v\" | tail -n 1)\"; else printf '@@FACTERR %s %s\\n' {name} "
            f"\"$(printf '%s' \"$v\" | tr '\\n' ' ' | cut -c1-300)\"; fi"
        )
    lines.append("echo @@END")
    return "\n".join(lines) + "\n"


def _unit_name(unit: str) -> str:
    """systemd's full name of `unit` (`ssh` -> `ssh.service`), as `systemctl show` reports it in Id=."""
    return unit if re.search(r"\.(service|socket|timer|target|path|mount|automount|swap|slice|scope|device)$",
                             unit) else f"{unit}.service"


def _units(spec: ProbeSpec, block_lines: list[str]) -> dict[str, tuple[str, str]]:
    """(is-enabled, is-active) per unit from `systemctl show`'s blocks: UnitFileState is what `is-enabled`
    prints ("" for a unit that does not exist: "absent"), ActiveState what `is-active` prints."""
    blocks: list[dict[str, str]] = [{}]
    for line in block_lines:
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ProbeError(f"unexpected line from systemctl show: {line[:120]!r}")
        blocks[-1][key] = value.strip()
    blocks = [b for b in blocks if b]
    if len(blocks) == len(spec.units):  # one block per unit, in the order asked (an alias reports its target)
        pairs = list(zip(spec.units, blocks, strict=True))
    else:  # systemctl skipped one: match by name
        by_id = {b.get("Id", ""): b for b in blocks}
        pairs = [(u, by_id[_unit_name(u)]) for u in spec.units if _unit_name(u) in by_id]
    return {u: (b.get("UnitFileState") or "absent", b.get("ActiveState") or "inactive") for u, b in pairs}


def _tar_entries(spec: ProbeSpec, encoded: str) -> tuple[dict[str, FileFact], dict[str, tuple[int, str, str]]]:
    """The regular files and directories in the probe's base64 gzipped tar (paths as given: tar -P keeps the
    leading slash; a directory's name may end in one)."""
    files: dict[str, FileFact] = {}
    dirs: dict[str, tuple[int, str, str]] = {}
    if not encoded:
        return files, dirs
    try:
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(encoded, validate=True)), mode="r:gz") as tar:
            for member in tar:
                name = member.name.rstrip("/") or "/"
                owner, group = member.uname or str(member.uid), member.gname or str(member.gid)
                if member.isfile():
                    data = tar.extractfile(member)
                    content = data.read() if data is not None else b""
                    files[name] = FileFact(member.mode & 0o7777, owner, group, content)
                elif member.isdir():
                    dirs[name] = (member.mode & 0o7777, owner, group)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ProbeError(f"the probe's archive of the managed files is unreadable: {exc}") from exc
    return files, dirs


def parse_probe(spec: ProbeSpec, lines: list[str]) -> HostFacts:
    facts = HostFacts()
    facts.files = {p: None for p in spec.files}
    facts.directories = {p: None for p in spec.directories}
    facts.packages = {p: False for p in spec.packages}
    facts.units = {u: ("absent", "inactive") for u in spec.units}
    it = iter(lines)
    ended = False
    for line in it:
        parts = line.rstrip("\n").split(" ")
        tag = parts[0]
        try:
            if tag == "@@TAR":
                files, dirs = _tar_entries(spec, parts[1] if len(parts) > 1 else "")
                facts.files.update({p: files.get(p) for p in spec.files})
                facts.directories.update({p: dirs.get(p) for p in spec.directories})
            elif tag == "@@NOTAR":
                raise ProbeError("tar is not installed on the host: the managed files cannot be read")
            elif tag == "@@UNITS":
                block: list[str] = []
                for inner in it:
                    if inner.rstrip("\n") == "@@UNITS-END":
                        break
                    block.append(inner.rstrip("\n"))
                else:
                    raise ProbeError("the probe's output was cut short (in the units' block)")
                facts.units.update(_units(spec, block))
            elif tag == "@@PKG":
                facts.packages[parts[1]] = " ".join(parts[2:]) == "install ok installed"
            elif tag == "@@FACT":
                facts.facts[parts[1]] = " ".join(parts[2:]).strip()
            elif tag == "@@FACTERR":
                facts.fact_errors[parts[1]] = " ".join(parts[2:]).strip() or "failed without a message"
            elif tag == "@@END":
                ended = True
        except ProbeError:
            raise
        except (IndexError, ValueError, StopIteration) as exc:
            raise ProbeError(f"unexpected probe output line: {line[:120]!r}") from exc
    if not ended:
        raise ProbeError("the probe's output was cut short (no @@END line)")
    return facts
