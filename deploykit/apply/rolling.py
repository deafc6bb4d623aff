"""A rolling app release: app hosts a batch at a time, each drained from every HAProxy first and put
back only once healthy, so a deploy drops no request. Pure: batches and commands as data."""

from __future__ import annotations

import shlex

from deploykit.execute.steps import Shell

ADMIN_SOCKET = "/run/haproxy/admin.sock"
DRAIN_GRACE_S = 10  # longest wait for a drained server's open requests to finish


def batches(hosts: list[str], size: int) -> list[list[str]]:
    """The first host alone (a canary: migrations run there), then `size` at a time, in name order."""
    ordered = sorted(hosts)
    if not ordered:
        return []
    out = [ordered[:1]]
    rest = ordered[1:]
    out += [rest[i:i + size] for i in range(0, len(rest), max(1, size))]
    return out


def haproxy_command(command: str) -> str:
    """Send one runtime-API command to the local HAProxy (socat is installed by the lb role)."""
    return f"echo {shlex.quote(command)} | socat stdio {ADMIN_SOCKET}"


def drain(backend: str, servers: list[str]) -> Shell:
    """Stop sending new requests to `servers`, then wait until their open sessions finish."""
    cmds = [haproxy_command(f"set server {backend}/{s} state drain") for s in servers]
    names = " || ".join(f'$2 == "{s}"' for s in servers)
    # `show stat` is CSV: pxname, svname, qcur, qmax, scur (current sessions), ...
    busy = f"awk -F, '$1 == \"{backend}\" && ({names}) && $5 > 0 {{busy=1}} END {{exit !busy}}'"
    wait = (f"deadline=$(( $(date +%s) + {DRAIN_GRACE_S} )); "
            f"while [ $(date +%s) -lt $deadline ] && {haproxy_command('show stat')} | {busy}; do sleep 0.2; done")
    return Shell(f"drain {', '.join(servers)} from HAProxy", "; ".join(cmds) + "; " + wait)


def ready(backend: str, servers: list[str]) -> Shell:
    cmds = [haproxy_command(f"set server {backend}/{s} state ready") for s in servers]
    return Shell(f"put {', '.join(servers)} back into HAProxy", "; ".join(cmds))
