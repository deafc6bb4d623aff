"""What a running lab is made of, kept on disk so `lab status`/`kill`/`down` work without the inventory.

One JSON file per lab under /var/lib/deploykit/lab/<lab>/ holds the layout (servers, segments), the SSH
settings and the partitions in force. It is written before anything is created and removed last, so a
half-built or half-removed lab can always be found again and finished or removed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from deploykit.errors import LabError
from deploykit.lab.layout import Layout, Segment, Server

STATE_ROOT = Path("/var/lib/deploykit/lab")
STATE_FILE = "state.json"


@dataclass(frozen=True, slots=True)
class Partition:
    target: str  # the HOST, SITE or PROVIDER it was asked for
    servers: tuple[str, ...]
    keep_controller: bool


@dataclass(slots=True)
class LabState:
    layout: Layout
    inventory: Path
    identity_file: Path
    known_hosts: Path
    ssh_port: int
    domain: str
    base: Path
    partitions: list[Partition] = field(default_factory=list)
    # A bare lab: servers as a provider delivers them, apt pointing at the lab's own repository (`repo`).
    bare: bool = False
    repo: Path | None = None

    @property
    def lab(self) -> str:
        return self.layout.lab

    @property
    def directory(self) -> Path:
        return lab_dir(self.lab)

    def server_dir(self, name: str) -> Path:
        return self.directory / "servers" / name

    def save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, self.directory / STATE_FILE)

    def to_json(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "inventory": str(self.inventory),
            "identity_file": str(self.identity_file),
            "known_hosts": str(self.known_hosts),
            "ssh_port": self.ssh_port,
            "domain": self.domain,
            "base": str(self.base),
            "bare": self.bare,
            "repo": str(self.repo) if self.repo else None,
            "segments": [
                {"site": s.site, "provider": s.provider, "network": str(s.network)} for s in self.layout.segments
            ],
            "servers": [{"name": s.name, "address": str(s.address), "site": s.site, "cpu_weight": s.cpu_weight}
                        for s in self.layout.servers],
            "partitions": [
                {"target": p.target, "servers": list(p.servers), "keep_controller": p.keep_controller}
                for p in self.partitions
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabState:
        segments = {
            d["site"]: Segment(site=d["site"], provider=d["provider"], network=IPv4Network(d["network"]))
            for d in data["segments"]
        }
        servers = tuple(
            Server(
                name=d["name"],
                address=IPv4Address(d["address"]),
                site=d["site"],
                provider=segments[d["site"]].provider,
                segment=segments[d["site"]],
                cpu_weight=int(d.get("cpu_weight", 1)),  # a lab started before weights: all equal
            )
            for d in data["servers"]
        )
        return cls(
            layout=Layout(lab=data["lab"], segments=tuple(segments.values()), servers=servers),
            inventory=Path(data["inventory"]),
            identity_file=Path(data["identity_file"]),
            known_hosts=Path(data["known_hosts"]),
            ssh_port=int(data["ssh_port"]),
            domain=data.get("domain", ""),
            base=Path(data["base"]),
            bare=bool(data.get("bare", False)),
            repo=Path(data["repo"]) if data.get("repo") else None,
            partitions=[
                Partition(target=p["target"], servers=tuple(p["servers"]), keep_controller=p["keep_controller"])
                for p in data.get("partitions", [])
            ],
        )


def lab_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def load_state(lab: str) -> LabState | None:
    path = lab_dir(lab) / STATE_FILE
    if not path.is_file():
        return None
    try:
        return LabState.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as e:
        raise LabError(f"{path}: unreadable lab state ({e}); remove {lab_dir(lab)} after checking nothing runs") from e


def existing_labs() -> list[str]:
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if (p / STATE_FILE).is_file())


def remove_state(lab: str) -> None:
    (lab_dir(lab) / STATE_FILE).unlink(missing_ok=True)
    try:
        lab_dir(lab).rmdir()
    except OSError:
        pass
