"""Draining servers through HAProxy's runtime API, for a ROLLING rollout. Pure: commands as data.

Each command fails (non-zero exit, HAProxy's answer on stderr) when socat cannot reach the admin socket or
HAProxy does not accept the command ("No such server."), so a drain that did not happen stops the batch.
"""

from __future__ import annotations

import shlex

from deploykit.execute.steps import Shell

ADMIN_SOCKET = "/run/haproxy/admin.sock"  # the template's `stats socket`
DRAIN_GRACE_S = 10  # longest wait for a drained server's open requests to finish


def haproxy_command(command: str) -> str:
    """Send one runtime-API command to the local HAProxy; fail unless it answers with nothing (success for
    `set server`). socat is installed by the lb service."""
    return (f"out=$(echo {shlex.quote(command)} | socat stdio {ADMIN_SOCKET}) && "
            f'{{ [ -z "$(echo "$out" | tr -d "[:space:]")" ] || {{ echo "HAProxy: $out" >&2; false; }}; }}')


def _query(command: str) -> str:
    return f"echo {shlex.quote(command)} | socat stdio {ADMIN_SOCKET}"


def drain(backend: str, servers: list[str]) -> Shell:
    """Stop sending new requests to `servers`, then wait (at most DRAIN_GRACE_S) until their sessions end."""
    cmds = [haproxy_command(f"set server {backend}/{s} state drain") for s in servers]
    names = " || ".join(f'$2 == "{s}"' for s in servers)
    # `show stat` is CSV: pxname, svname, qcur, qmax, scur (current sessions), ...
    busy = f"awk -F, '$1 == \"{backend}\" && ({names}) && $5 > 0 {{busy=1}} END {{exit !busy}}'"
    wait = (f"deadline=$(( $(date +%s) + {DRAIN_GRACE_S} )); "
            f"while [ $(date +%s) -lt $deadline ] && {_query('show stat')} | {busy}; do sleep 0.2; done; true")
    return Shell(f"drain {', '.join(servers)} from HAProxy", " && ".join(cmds) + " && { " + wait + "; }")


def ready(backend: str, servers: list[str]) -> Shell:
    cmds = [haproxy_command(f"set server {backend}/{s} state ready") for s in servers]
    return Shell(f"put {', '.join(servers)} back into HAProxy", " && ".join(cmds))
