"""`deploykit secrets rotate`: new values for stored secrets, applied everywhere they are used, in an order that
keeps the app serving.

1. Every host must answer (a host left holding an old password could not rejoin): checked before anything.
2. The store makes the new values and keeps the old ones as *previous* values (secrets_store.rotate).
3. A first apply gives every client the new values while the services still take the old ones: Redis and
   Sentinel accept both (the ACL takes both hashes; the group still uses the old one among itself); the app
   gets the new database password and the one PostgreSQL still holds (a role has only one), tried in that
   order; PostgreSQL and Patroni keep what they hold (db service: `held`).
4. The previous values are forgotten and a second apply changes the services: the roles' passwords on the
   leader (ALTER ROLE, before Patroni reloads; the leader before its replicas), Patroni's credentials, and
   Redis and Sentinel accept only the new password; the app drops the old one.

A rotation stopped half-way (a failed apply) keeps both values in the store: running the command again
finishes it without making newer values.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from deploykit.apply.workflow import _plan, apply_target
from deploykit.errors import DeploykitError, ExitCode
from deploykit.inventory import load_inventory
from deploykit.inventory.suggest import did_you_mean
from deploykit.plan import plan_placement
from deploykit.secrets_store import SecretStore, maker_for
from deploykit.services.lb.tls import TLS_CA_KEY, TLS_USER_KEY

# Stored secrets `rotate` leaves alone, and why (said when one is asked for by name).
NOT_ROTATED = {
    TLS_CA_KEY: "every client of the HTTPS edge trusts this CA: a new one needs them to trust it first "
                "(the edge certificate it signs is rotated with tls-edge-key)",
    TLS_USER_KEY: "it is your own certificate's key: replace the files named in services.lb.tls and apply",
}


def not_rotated(name: str) -> str | None:
    """Why `name` is never rotated (NOT_ROTATED, or a service's `unrotated`), or None."""
    from fnmatch import fnmatchcase

    from deploykit.services import SERVICES

    if name in NOT_ROTATED:
        return NOT_ROTATED[name]
    return next((why for s in SERVICES for pattern, why in s.unrotated.items() if fnmatchcase(name, pattern)), None)


def rotatable(store: SecretStore) -> list[str]:
    """The stored secrets a rotation makes anew: not the public ones (certificates: made again from their keys),
    not those that are never rotated."""
    return [n for n in store.names() if not_rotated(n) is None and not _public(n)]


def _public(name: str) -> bool:
    maker = maker_for(name)
    return maker is not None and maker.public


def chosen(store: SecretStore, names: tuple[str, ...]) -> list[str]:
    """The secrets to rotate: `names` (each checked), or every rotatable one."""
    every = rotatable(store)
    if not names:
        return every
    problems = []
    for name in names:
        if (why := not_rotated(name)) is not None:
            problems.append(f"{name} is not rotated: {why}")
        elif _public(name) and name in store.names():
            problems.append(f"{name} is public and made from its key: rotate the key instead")
        elif name not in every:
            problems.append(f"no secret named '{name}' to rotate{did_you_mean(name, every)}")
    if problems:
        raise DeploykitError("; ".join(problems))
    return list(dict.fromkeys(names))


def rotate_secrets(inventory: Path, names: tuple[str, ...], out: Console, err: Console, *, yes: bool,
                   show_diffs: bool) -> int:
    inv = load_inventory(inventory)
    store = SecretStore(inv, create_key=False)
    under_way = store.rotating()
    if under_way and names and set(names) - set(under_way):
        raise DeploykitError(f"a rotation of {', '.join(under_way)} is under way: finish it first "
                             f"(`deploykit secrets rotate {inventory}` without names)")
    todo = under_way or chosen(store, names)
    if not todo:
        raise DeploykitError(f"{inventory}: no secret stored yet to rotate; apply the inventory first")
    plan, session = _plan(inv, plan_placement(inv), err, (), False, ensure_facts=False)
    from deploykit.execute import executor

    executor.disconnect(session)
    if plan.has_errors:
        down = sorted({**plan.unreachable, **plan.probe_failed})
        raise DeploykitError(f"not rotating: {len(down)} host(s) cannot be planned ({', '.join(down)}); a host "
                             "left with the old values could not rejoin. Bring them back (or take them out of "
                             "the inventory) first")
    what = "finishing the rotation of" if under_way else "rotating"
    if not yes:
        if not sys.stdin.isatty():
            raise DeploykitError("secrets rotate needs confirmation but there is no terminal to ask on; pass --yes")
        if not click.confirm(f"{what.capitalize()} {len(todo)} secret(s) ({', '.join(todo)}) on every host?",
                             default=False):
            err.print("nothing rotated")
            return ExitCode.ERROR
    if not under_way:
        store.rotate(todo)
    err.print(Text(f"{what} {', '.join(todo)}: new values stored; applying them, the previous ones still "
                   "accepted where a service can take both", style="bold"))
    code = apply_target(inventory, out, err, yes=True, limit=(), show_diffs=show_diffs, accept_new_host_keys=False)
    if code != ExitCode.OK:
        err.print(Text(f"the rotation is half-way: the new values are stored and the previous ones still "
                       f"accepted; fix the cause and run `deploykit secrets rotate {inventory}` again to finish it",
                       style="red"))
        return ExitCode.ERROR
    SecretStore(inv, create_key=False).finish_rotation()
    err.print(Text("every host uses the new values: the previous ones are forgotten; applying that", style="bold"))
    code = apply_target(inventory, out, err, yes=True, limit=(), show_diffs=show_diffs, accept_new_host_keys=False)
    if code != ExitCode.OK:
        err.print(Text(f"some hosts may still accept the previous values until `deploykit apply {inventory}` "
                       "succeeds", style="red"))
        return ExitCode.ERROR
    err.print(Text(f"rotated {len(todo)} secret(s): {', '.join(todo)}", style="green"))
    return ExitCode.OK
