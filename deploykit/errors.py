"""Errors deploykit reports to its users as one clear line (or a list of them) and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Stable exit codes (documented in README): CI tells "invalid" from "changes pending" from "not
    resilient" from "bad command line"."""

    OK = 0
    ERROR = 1  # invalid input (inventory, plan file, --limit), or a failed/unreachable host, a failed apply
    CHANGES = 2  # plan: changes pending (terraform -detailed-exitcode)
    NOT_RESILIENT = 3  # plan --offline: some loss of one failure-domain unit takes a tier down
    USAGE = 64  # the command line itself is wrong (unknown option, missing argument): sysexits' EX_USAGE
    INTERRUPTED = 130


class DeploykitError(Exception):
    """Base of every error that the CLI turns into a clear message (never a traceback)."""

    exit_code: ExitCode = ExitCode.ERROR

    def lines(self) -> list[str]:
        return [str(self)]


class InventoryError(DeploykitError):
    """The inventory cannot be used; carries every problem found, each with file, line and key path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems))

    def lines(self) -> list[str]:
        return [p.render() for p in self.problems]


class LabError(DeploykitError):
    """The local lab cannot do what was asked (not root, missing tool, unknown server, ...)."""


class Problem:
    """One validation finding: where it is and what to do about it."""

    __slots__ = ("file", "line", "path", "message", "severity")

    def __init__(self, file: str, line: int | None, path: str, message: str, severity: str = "error") -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message
        self.severity = severity

    def render(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}:{key} {prefix}{self.message}"

    def __repr__(self) -> str:
        return f"Problem({self.render()!r})"
