"""A tier's verdict after a loss: up, degraded or down, with the reason and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(str, Enum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"

    @property
    def rank(self) -> int:
        return {"up": 0, "degraded": 1, "down": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Verdict:
    tier: str
    status: Status
    reason: str
    fix: str = ""


def left(names: list[str] | tuple[str, ...], gone: frozenset[str]) -> list[str]:
    """The names not in `gone`, in order."""
    return [n for n in names if n not in gone]
