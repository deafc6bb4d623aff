"""Console-script entry: commands that connect to hosts get gevent's monkey-patching first, here and only here.

pyinfra runs hosts as gevent greenlets; paramiko's transport threads must be greenlets too, which only
works if threading and sockets are patched before anything imports them. Pure commands (validate,
plan --offline, lab, secrets) skip it and stay fast. Nothing else in deploykit patches anything: the executor
refuses to connect when this did not run.
"""

from __future__ import annotations

import sys
from typing import Any

CONNECTING = {"plan", "apply", "backup", "backups", "restore"}
CONNECTING_SUBCOMMANDS = {("secrets", "rotate")}


def needs_gevent(args: list[str]) -> bool:
    words = [a for a in args if not a.startswith("-")]
    command = words[0] if words else ""
    if tuple(words[:2]) in CONNECTING_SUBCOMMANDS:
        return True
    return command in CONNECTING and "--offline" not in args


def patch_gevent() -> None:
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def main() -> Any:
    if needs_gevent(sys.argv[1:]):
        patch_gevent()
    from deploykit.cli import main as cli_main

    return cli_main()
