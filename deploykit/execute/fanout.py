"""The limits of talking to many hosts at once, as pure functions the executor applies (the 500-server day).

- Connection starts in flight (TCP connect, SSH handshake and authentication) are bounded by the inventory's
  `ssh.max_startups`, separately from how many connected hosts run steps at once (the executor's pool).
- A connect attempt that failed for a passing reason (refused, timed out, reset, cut during the banner or the
  key exchange) is tried again after a growing, jittered delay; a host key refusal or an authentication failure
  is final at once. This is the only retry: pyinfra's own `ssh_connect_retries` is set to 0 (it retries host key
  refusals too, with a flat random delay, and sleeps inside the connection start it holds).
- Open files: one socket per connected host (measured: 200 hosts on loopback with paramiko 4 and gevent took
  202 descriptors, 1.01 per host; probes and steps run as channels of that connection and open none). The
  soft RLIMIT_NOFILE is raised toward twice that when the hard limit allows, and a run whose hard limit cannot
  hold one per host is refused before it connects anywhere.
"""

from __future__ import annotations

import random
import resource
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from paramiko import AuthenticationException, BadHostKeyException, SSHException

from deploykit.errors import DeploykitError

CONNECT_RETRIES = 3  # after the first attempt: delays of about 0.5, 1 and 2 s
BACKOFF_FIRST_S = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_JITTER = 0.25  # each delay is drawn within +-25% of its nominal value

FDS_BASE = 64  # deploykit itself: stdio, gevent's hub, logs, the inventory, secrets and templates it reads
FDS_PER_HOST = 1  # the connection's socket (measured, see above): what a run needs at least
FDS_HEADROOM_PER_HOST = 2  # what the soft limit is raised toward when it can be: twice the measured need

_LOCAL_FILE_ERRORS = PermissionError | FileNotFoundError | IsADirectoryError | NotADirectoryError

# Paramiko's words for a server that will never do: retrying it only delays the message.
_FINAL_SSH = ("StrictPolicy", "No host key", "does not match", "Incompatible", "no acceptable")


class FanoutProgress(Protocol):
    """Told how a stage over many hosts goes (`connect`, `probe`): the CLI draws a progress line from it."""

    def start(self, stage: str, total: int) -> None: ...

    def advance(self, ok: bool) -> None: ...

    def finish(self) -> None: ...


def backoff_delays(retries: int = CONNECT_RETRIES, *, first: float = BACKOFF_FIRST_S, factor: float = BACKOFF_FACTOR,
                   jitter: float = BACKOFF_JITTER, draw: Callable[[], float] = random.random) -> list[float]:
    """The waits before each retry: first, first*factor, ... each moved by up to +-jitter of itself (`draw` gives
    0..1), so that hosts refused together do not come back together."""
    return [first * factor ** i * (1 + jitter * (2 * draw() - 1)) for i in range(max(0, retries))]


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from or during (pyinfra wraps paramiko's errors in ConnectError
    inside an `except` block, so the original is the wrapper's __context__)."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen and len(seen) < 8:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """Whether another connect attempt may succeed: a refused, timed-out or reset connection, or one cut during
    the SSH banner or key exchange (a server at its MaxStartups drops new connections so). Not: a host key that
    is unknown or changed, an authentication failure, a name that does not resolve, an incompatible server, or
    anything not from the network (a key or known_hosts file missing or unreadable)."""
    for e in _chain(exc):
        if isinstance(e, AuthenticationException | BadHostKeyException | socket.gaierror | _LOCAL_FILE_ERRORS):
            return False
        if isinstance(e, SSHException):
            return not any(word in str(e) for word in _FINAL_SSH)
        if isinstance(e, OSError | EOFError):  # refused, reset, timed out (TimeoutError is an OSError)
            return True
    return False


def connect_with_retries(attempt: Callable[[], Exception | None], starts: AbstractContextManager[Any],
                         delays: list[float], sleep: Callable[[float], None]) -> tuple[Exception | None, int]:
    """Attempt to connect one host until an attempt succeeds (None), one fails for good, or `delays` run out:
    the last error and the number of attempts. Each attempt holds one of the run's `starts` (a semaphore of
    `ssh.max_startups`); the wait between attempts does not."""
    for attempts, delay in enumerate([*delays, None], start=1):
        with starts:
            error = attempt()
        if error is None or delay is None or not is_transient(error):
            return error, attempts
        sleep(delay)
    raise AssertionError("unreachable: the last delay is None")


# --- open files ----------------------------------------------------------------------------------------------


def open_files_needed(hosts: int) -> int:
    """Descriptors a run over `hosts` hosts needs at least: one socket per host and deploykit's own."""
    return FDS_BASE + FDS_PER_HOST * hosts


def open_files_wanted(hosts: int) -> int:
    """What the soft limit is raised toward when the hard limit allows: the need with room to spare."""
    return FDS_BASE + FDS_HEADROOM_PER_HOST * hosts


@dataclass(frozen=True)
class OpenFiles:
    """What to do about RLIMIT_NOFILE before connecting: raise the soft limit to `raise_to` (None: leave it);
    `error` says why the run cannot go on (the hard limit is below the need)."""

    needed: int
    raise_to: int | None = None
    error: str = ""


def decide_open_files(hosts: int, soft: int, hard: int) -> OpenFiles:
    """`soft`/`hard` as resource.getrlimit gives them (RLIM_INFINITY for no limit)."""
    needed, wanted = open_files_needed(hosts), open_files_wanted(hosts)
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= wanted:
        return OpenFiles(needed)
    target = wanted if hard == unlimited else min(wanted, hard)
    if target < needed:
        return OpenFiles(needed, error=too_few_open_files(hosts, needed, soft, hard))
    return OpenFiles(needed, raise_to=target if target > soft else None)


def too_few_open_files(hosts: int, needed: int, soft: int, hard: int) -> str:
    suggest = open_files_wanted(hosts)
    return (f"connecting to {hosts} hosts needs at least {needed} open files (one socket per host, {FDS_BASE} for "
            f"deploykit itself), but this process may open only {soft} (hard limit {hard}); raise the limit "
            f"before running deploykit: `ulimit -n {suggest}` in the shell (raising the hard limit needs root: "
            f"`nofile` in /etc/security/limits.conf), `LimitNOFILE={suggest}` in a systemd unit, or connect to "
            f"fewer hosts at once with --limit")


class TooFewOpenFiles(DeploykitError):
    """The process may not open a socket for every host: refused before connecting anywhere."""


def ensure_open_files(hosts: int, *, getrlimit: Callable[[int], tuple[int, int]] = resource.getrlimit,
                      setrlimit: Callable[[int, tuple[int, int]], None] = resource.setrlimit) -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE as `decide_open_files` says, or raise TooFewOpenFiles."""
    soft, hard = getrlimit(resource.RLIMIT_NOFILE)
    decision = decide_open_files(hosts, soft, hard)
    if decision.error:
        raise TooFewOpenFiles(decision.error)
    if decision.raise_to is not None:
        try:
            setrlimit(resource.RLIMIT_NOFILE, (decision.raise_to, hard))
        except (ValueError, OSError) as exc:  # e.g. macOS refuses more than kern.maxfilesperproc
            if soft < decision.needed:
                raise TooFewOpenFiles(too_few_open_files(hosts, decision.needed, soft, hard)
                                      + f" (raising it to {decision.raise_to} failed: {exc})") from exc
    return decision
