"""One shell command per host that reports everything the diff needs; and its parser.

The command prints, for each managed file, its mode/owner and base64 content (or that it is absent), each
package's dpkg status, each unit's enabled/active state, and each
directory's mode/owner. One round trip per host, whatever the number of files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
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
    """A POSIX sh script (one line per item) printing `@@` records; exits 0 even when things are absent."""
    q = shlex.quote
    lines = ["export LC_ALL=C"]
    for path in spec.files:
        lines.append(
            f"if [ -f {q(path)} ]; then printf '@@FILE %s %s\\n' {q(path)} \"$(stat -c '%a:%U:%G' {q(path)})\"; "
            f"base64 -w0 {q(path)}; echo; else printf '@@NOFILE %s\\n' {q(path)}; fi"
        )
    for path in spec.directories:
        lines.append(
            f"if [ -d {q(path)} ]; then printf '@@DIR %s %s\\n' {q(path)} \"$(stat -c '%a:%U:%G' {q(path)})\"; "
            f"else printf '@@NODIR %s\\n' {q(path)}; fi"
        )
    if spec.packages:
        pkgs = " ".join(q(p) for p in spec.packages)
        lines.append(f"dpkg-query -W -f='@@PKG ${{Package}} ${{Status}}\\n' {pkgs} 2>/dev/null")
    for unit in spec.units:
        lines.append(
            f"printf '@@UNIT %s %s %s\\n' {q(unit)} \"$(systemctl is-enabled {q(unit)} 2>/dev/null || true)\" "
            f"\"$(systemctl is-active {q(unit)} 2>/dev/null || true)\""
        )
    for name, script in spec.facts:
        # The script's last line is the value; if it fails, its output (stderr too) says why.
        lines.append(
            f"v=$( ( {script} ) 2>&1 ); if [ $? -eq 0 ]; then printf '@@FACT %s %s\\n' {name} "
            f"\"$(printf '%s\\n' \"$v\" | tail -n 1)\"; else printf '@@FACTERR %s %s\\n' {name} "
            f"\"$(printf '%s' \"$v\" | tr '\\n' ' ' | cut -c1-300)\"; fi"
        )
    lines.append("echo @@END")
    return "\n".join(lines) + "\n"


def _meta(text: str) -> tuple[int, str, str]:
    mode, owner, group = text.split(":")
    return int(mode, 8), owner, group


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
            if tag == "@@FILE":
                mode, owner, group = _meta(parts[2])
                content = base64.b64decode(next(it).strip())
                facts.files[parts[1]] = FileFact(mode, owner, group, content)
            elif tag == "@@DIR":
                facts.directories[parts[1]] = _meta(parts[2])
            elif tag == "@@PKG":
                facts.packages[parts[1]] = " ".join(parts[2:]) == "install ok installed"
            elif tag == "@@UNIT":
                enabled = parts[2] if len(parts) > 2 and parts[2] else "absent"
                active = parts[3] if len(parts) > 3 and parts[3] else "inactive"
                facts.units[parts[1]] = (enabled, active)
            elif tag == "@@FACT":
                facts.facts[parts[1]] = " ".join(parts[2:]).strip()
            elif tag == "@@FACTERR":
                facts.fact_errors[parts[1]] = " ".join(parts[2:]).strip() or "failed without a message"
            elif tag == "@@END":
                ended = True
        except (IndexError, ValueError, StopIteration) as exc:
            raise ProbeError(f"unexpected probe output line: {line[:120]!r}") from exc
    if not ended:
        raise ProbeError("the probe's output was cut short (no @@END line)")
    return facts
