"""SSH identities of the lab: the lab's client key pair, each server's host key, the known_hosts file."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from deploykit.lab.proc import run


def keygen_argv(path: Path, comment: str) -> list[str]:
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def ensure_client_key(identity_file: Path) -> str:
    """The lab's public key, after creating the key pair if it is missing."""
    pub = identity_file.with_name(identity_file.name + ".pub")
    if not identity_file.is_file():
        identity_file.parent.mkdir(parents=True, exist_ok=True)
        pub.unlink(missing_ok=True)
        run(keygen_argv(identity_file, "deploykit-lab"))
    elif not pub.is_file():
        pub.write_text(run(["ssh-keygen", "-y", "-f", str(identity_file)]).stdout)
    return pub.read_text().strip()


def make_host_key(etc_ssh: Path, name: str) -> str:
    """Generate a server's ed25519 host key into its /etc/ssh (before it boots); return the public key."""
    key = etc_ssh / "ssh_host_ed25519_key"
    key.unlink(missing_ok=True)
    key.with_name(key.name + ".pub").unlink(missing_ok=True)
    run(keygen_argv(key, f"root@{name}"))
    return key.with_name(key.name + ".pub").read_text().strip()


def known_hosts_line(address: str, name: str, port: int, public_key: str) -> str:
    """One known_hosts entry for a server, by address and by name (`[addr]:port` off port 22)."""
    names = [address, name] if port == 22 else [f"[{address}]:{port}", f"[{name}]:{port}"]
    key_type, key_data = public_key.split()[:2]
    return f"{','.join(names)} {key_type} {key_data}"


def fingerprint(public_key: str) -> str:
    """A public key's SHA256 fingerprint, as `ssh-keygen -l` and ssh print it."""
    digest = hashlib.sha256(base64.b64decode(public_key.split()[1])).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_names(line: str) -> set[str]:
    """The host names/addresses a known_hosts line is for (none for a comment, a marker or a hashed entry)."""
    if not line.strip() or line.lstrip().startswith(("#", "@", "|")):
        return set()
    return set(line.split()[0].split(","))


def replace_known_hosts_lines(current: Sequence[str], new: Sequence[str]) -> list[str]:
    """`current` with the hosts of the `new` lines given those lines: a new line takes the place of the first
    line naming any of its names (address or name) and drops the others; a host not in `current` is appended.
    Every other line stays as it is."""
    out: list[str] = []
    placed: set[int] = set()
    for line in current:
        names = known_hosts_names(line)
        matching = [i for i, n in enumerate(new) if names & known_hosts_names(n)]
        if not matching:
            out.append(line)
        for i in matching:
            if i not in placed:
                out.append(new[i])
                placed.add(i)
    return out + [n for i, n in enumerate(new) if i not in placed]


def write_known_hosts(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    os.replace(tmp, path)
