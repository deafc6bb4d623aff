"""The `deploykit` command line. Thin: parse options, call the layers, print, pick the exit code.

One boundary (`main`) turns every DeploykitError into a clear message and its exit code; anything
unexpected is written with its traceback to a debug log and reported in one line (`--debug` re-raises).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from deploykit import __version__
from deploykit.errors import DeploykitError, ExitCode, InventoryError

LAZY_GROUPS = {"lab": "deploykit.lab.commands:lab"}
DEBUG_LOG = Path(os.environ.get("DEPLOYKIT_DEBUG_LOG", Path(tempfile.gettempdir()) / "deploykit-debug.log"))

out = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Root(click.Group):
    """Subcommand groups that pull in heavier modules are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_GROUPS])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_GROUPS:
            module, attr = LAZY_GROUPS[name].split(":")
            try:
                cmd: click.Command = getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                return _unavailable(name, exc)
            return cmd
        return super().get_command(ctx, name)


def _unavailable(name: str, exc: ImportError) -> click.Command:
    def run() -> None:
        raise DeploykitError(f"'deploykit {name}' is not available in this installation ({exc})")

    return click.Command(name, callback=run, help=f"(not available: {exc})",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deploykit")
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Provision, load-balance and fail over a social app's stack on servers you own."""
    ctx.obj = {"debug": debug}


@cli.command()
@click.argument("inventory", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def validate(inventory: Path, as_json: bool) -> None:
    """Check INVENTORY without connecting anywhere; exit 1 if it has errors."""
    from deploykit.inventory import check_inventory

    inv, problems = check_inventory(inventory)
    errors = [p for p in problems if p.severity == "error"]
    if as_json:
        click.echo(json.dumps({
            "inventory": str(inventory), "valid": inv is not None,
            "problems": [{"file": p.file, "line": p.line, "path": p.path, "severity": p.severity,
                          "message": p.message} for p in problems],
        }, indent=2))
    else:
        for p in problems:
            (err if p.severity == "error" else out).print(Text(p.render(), style="red" if p.severity == "error"
                                                                else "yellow"))
        if inv is not None:
            out.print(Text(f"{inventory}: valid ({len(inv.hosts)} hosts in {len(inv.sites)} sites at "
                           f"{len(inv.providers)} providers)", style="green"))
        else:
            err.print(Text(f"{inventory}: {len(errors)} error(s)", style="bold red"))
    if inv is None:
        raise SystemExit(ExitCode.ERROR)


@cli.command()
@click.argument("inventory", type=click.Path(dir_okay=True, path_type=Path))
@click.option("--offline", is_flag=True, help="Only placement and resilience; connect to nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (for CI).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Save the plan; `deploykit apply FILE` applies exactly it.")
@click.option("--limit", multiple=True, help="Only these hosts, roles, sites or providers (repeatable).")
@click.option("--no-diff", is_flag=True, help="List changed files without their diffs.")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust (and record) keys of hosts not in known_hosts.")
@click.option("--failures-only", is_flag=True, help="With --offline: list only the losses that are not all up.")
def plan(inventory: Path, offline: bool, as_json: bool, out_file: Path | None, limit: tuple[str, ...],
         no_diff: bool, accept_new_host_keys: bool, failures_only: bool) -> None:
    """Show what would change on every host (exit 0: none, 2: changes, 1: error).

    With --offline: the placement and the resilience report only (exit 0 when the stack survives
    the loss of any one unit of every failure-domain level, 3 when some loss takes a tier down);
    --out FILE saves it as JSON.
    """
    from deploykit.apply.selection import select_hosts
    from deploykit.inventory import load_inventory
    from deploykit.plan import plan_placement

    if failures_only and not offline:
        raise click.UsageError("--failures-only applies to the offline plan (plan --offline)")
    inv = load_inventory(inventory)
    select_hosts(inv, limit)  # an unknown name is an error (with the nearest names), whatever the mode
    if offline and limit:
        raise click.UsageError("--limit applies to the online plan; the offline plan always covers the whole "
                               "inventory (placement and resilience are properties of all hosts together)")
    placement = plan_placement(inv)
    if offline:
        _offline_plan(inv, placement, as_json=as_json, out_file=out_file, failures_only=failures_only)
        return
    from deploykit.apply.workflow import online_plan

    code = online_plan(inv, placement, out, err, as_json=as_json, out_file=out_file, limit=limit,
                       show_diffs=not no_diff, accept_new_host_keys=accept_new_host_keys)
    raise SystemExit(code)


def _offline_plan(inv: Any, placement: Any, *, as_json: bool, out_file: Path | None, failures_only: bool) -> None:
    from deploykit.plan import analyse_resilience
    from deploykit.plan.serialize import offline_plan_data

    report = analyse_resilience(inv, placement)
    if as_json or out_file is not None:
        data = json.dumps(offline_plan_data(inv, placement, report), indent=2) + "\n"
        if as_json:
            click.echo(data, nl=False)
        if out_file is not None:
            tmp = out_file.with_name(out_file.name + ".tmp")
            try:
                tmp.write_text(data)
                tmp.replace(out_file)
            except OSError as exc:
                raise DeploykitError(f"{out_file}: cannot save the offline plan ({exc.strerror})") from exc
            err.print(Text(f"offline plan (placement and resilience, JSON) saved to {out_file}; it records "
                           "no host state, so `deploykit apply` does not take it", style="cyan"))
    if not as_json:
        from deploykit.plan.report import print_offline_plan

        print_offline_plan(out, inv, placement, report, failures_only)
    if not report.survives:
        raise SystemExit(ExitCode.NOT_RESILIENT)


@cli.command()
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", "-y", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--limit", multiple=True, help="Only these hosts, roles, sites or providers (repeatable).")
@click.option("--no-diff", is_flag=True, help="List changed files without their diffs.")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust (and record) keys of hosts not in known_hosts.")
def apply(target: Path, yes: bool, limit: tuple[str, ...], no_diff: bool, accept_new_host_keys: bool) -> None:
    """Apply an INVENTORY (plan, confirm, apply) or a plan FILE saved with `plan --out`."""
    from deploykit.apply.workflow import apply_target

    raise SystemExit(apply_target(target, out, err, yes=yes, limit=limit, show_diffs=not no_diff,
                                  accept_new_host_keys=accept_new_host_keys))


@cli.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--type", "kind", type=click.Choice(["full", "diff", "incr"]), default="full", show_default=True,
              help="Full, differential (since the last full) or incremental (since the last backup).")
@click.option("--repo", "repos", multiple=True, help="Only this repository (its host, or repoN; repeatable).")
def backup(inventory: Path, kind: str, repos: tuple[str, ...]) -> None:
    """Take a backup of the database now, into every repository (one after the other)."""
    from deploykit.services.backup.operations import take_backup

    raise SystemExit(take_backup(inventory, kind, repos, out, err))


@cli.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def backups(inventory: Path, as_json: bool) -> None:
    """List each repository's backups and the time range a point-in-time restore can reach."""
    from deploykit.services.backup.operations import list_backups

    raise SystemExit(list_backups(inventory, as_json, out, err))


@cli.command()
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--time", "when", help="Restore to this time: ISO 8601 with its zone, e.g. 2026-11-30T05:40:00Z.")
@click.option("--repo", "repos", multiple=True, help="Restore from this repository (its host, or repoN).")
@click.option("--into", "into", help="A restore drill on this backup host instead; the cluster is not touched.")
@click.option("--query", help="With --into: SQL to run on the restored copy (in the app's database).")
@click.option("--keep", is_flag=True, help="With --into: leave the restored copy running for inspection.")
@click.option("--yes", "-y", is_flag=True, help="Restore without asking for confirmation.")
def restore(inventory: Path, when: str | None, repos: tuple[str, ...], into: str | None, query: str | None,
            keep: bool, yes: bool) -> None:
    """Point-in-time restore of the whole database cluster (--time), or a restore drill (--into HOST)."""
    from deploykit.services.backup.operations import BackupError, restore_cluster, restore_drill

    if into is not None:
        if repos:
            raise BackupError("--repo does not go with --into: a drill restores from the backup host's own "
                              "repository (name the host of the repository to drill with --into)")
        raise SystemExit(restore_drill(inventory, into, when, query, keep, out, err))
    if query or keep:
        raise BackupError("--query and --keep go with --into HOST (a restore drill)")
    if when is None:
        raise BackupError("restore needs --time (the point in time to restore the cluster to), or --into HOST "
                          "for a drill; `deploykit backups INVENTORY` shows what is recoverable")
    raise SystemExit(restore_cluster(inventory, when, repos, yes, out, err))


@cli.group()
def secrets() -> None:
    """The generated secrets of an inventory (stored encrypted next to it)."""


@secrets.command("list")
@click.argument("inventory", type=click.Path(dir_okay=False, path_type=Path))
def secrets_list(inventory: Path) -> None:
    """Name every secret (values are never listed)."""
    from deploykit.inventory import load_inventory
    from deploykit.secrets_store import SecretStore

    store = SecretStore(load_inventory(inventory), create_key=False)
    for name in store.names():
        click.echo(name)
    err.print(Text(f"{len(store.names())} secret(s) in {store.path} (key: {store.key_file})", style="dim"))


@secrets.command("get")
@click.argument("inventory", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("name")
def secrets_get(inventory: Path, name: str) -> None:
    """Print one secret's value (for an operator or a script, e.g. the PostgreSQL password)."""
    from deploykit.inventory import load_inventory
    from deploykit.secrets_store import SecretStore

    click.echo(SecretStore(load_inventory(inventory), create_key=False).existing(name).reveal())


@secrets.command("rotate")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--yes", "-y", is_flag=True, help="Rotate and apply without asking for confirmation.")
@click.option("--no-diff", is_flag=True, help="List changed files without their diffs.")
def secrets_rotate(inventory: Path, names: tuple[str, ...], yes: bool, no_diff: bool) -> None:
    """Make new values for NAMES (default: every rotatable secret) and apply them on every host, inside the
    services too (PostgreSQL roles, Redis ACL), keeping the app serving; then stop accepting the old ones."""
    from deploykit.apply.rotation import rotate_secrets

    raise SystemExit(rotate_secrets(inventory, names, out, err, yes=yes, show_diffs=not no_diff))


@secrets.command("ca")
@click.argument("inventory", type=click.Path(dir_okay=False, path_type=Path))
def secrets_ca(inventory: Path) -> None:
    """Print the certificate (PEM) of deploykit's CA for INVENTORY, for clients to trust the HTTPS it serves
    (e.g. curl --cacert); made now if no plan made it yet."""
    from deploykit.inventory import load_inventory
    from deploykit.secrets_store import SecretStore
    from deploykit.services.lb.tls import deployment_ca

    inv = load_inventory(inventory)
    click.echo(deployment_ca(inv, SecretStore(inv)), nl=False)


def _report_error(exc: DeploykitError) -> None:
    lines = exc.lines()
    if isinstance(exc, InventoryError):
        for line in lines:
            err.print(Text(line, style="red"))
        err.print(Text(f"{len(lines)} error(s); nothing was changed on any host", style="bold red"))
        return
    for line in lines:
        err.print(Text(f"error: {line}", style="red"))


def main(argv: list[str] | None = None) -> Any:
    """Entry point: map errors to messages and exit codes (never a traceback unless --debug)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="deploykit", standalone_mode=False)
        code: int = ExitCode.OK
    except DeploykitError as exc:
        if debug:
            raise
        _report_error(exc)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.UsageError as exc:
        exc.show()
        code = ExitCode.USAGE
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.ERROR
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print("interrupted")
        code = ExitCode.INTERRUPTED
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else ExitCode.ERROR
    except Exception as exc:  # the boundary: anything unexpected is a bug, reported in one line
        if debug:
            raise
        try:
            with DEBUG_LOG.open("a") as log:
                log.write(traceback.format_exc())
            where = f"details in {DEBUG_LOG}"
        except OSError:
            where = "could not write the debug log"
        err.print(Text(f"internal error: {type(exc).__name__}: {exc} ({where}; rerun with --debug)", style="red"))
        code = ExitCode.ERROR
    sys.exit(int(code))


if __name__ == "__main__":
    main()
