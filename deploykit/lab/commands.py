"""`deploykit lab ...`: real test servers on this machine (thin click layer over `deploykit.lab.lab.Lab`)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table

from deploykit.errors import DeploykitError, LabError
from deploykit.inventory import load_inventory
from deploykit.lab.lab import Lab, Progress
from deploykit.lab.state import existing_labs, load_state

console = Console(stderr=True)
inventory_option = click.option(
    "-i", "--inventory", type=click.Path(path_type=Path, dir_okay=False),
    help="Inventory of the lab (default: the only lab on this machine).",
)  # fmt: skip


class ConsoleProgress(Progress):
    """Steps as lines; the wait for SSH as a bar."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.bar: RichProgress | None = None
        self.task: TaskID | None = None

    def step(self, message: str) -> None:
        console.print(f"[dim]{time.monotonic() - self.started:5.1f}s[/] {message}")

    def waiting(self, total: int) -> None:
        self.bar = RichProgress(
            TextColumn("[dim]{task.fields[t]}[/] servers answering SSH"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=console, transient=True,
        )  # fmt: skip
        self.bar.start()
        self.task = self.bar.add_task("ssh", total=total, t=f"{time.monotonic() - self.started:5.1f}s")

    def answered(self, name: str) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def find_lab(inventory: Path | None) -> Lab:
    if inventory is None:
        return Lab.running()
    return Lab.running(load_inventory(inventory).name)


@click.group("lab")
def lab() -> None:
    """Real test servers (systemd-nspawn) for an inventory's hosts, on this Linux machine (needs root)."""


@lab.command("up")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bare", is_flag=True, default=None,
              help="Servers as bare as a provider's fresh Debian (no service package installed); apt on them "
                   "reaches only the lab's own package repository, built once on this machine.")
def up(inventory: Path, bare: bool | None) -> None:
    """Start a server per host of INVENTORY (only what is missing); wait until every one answers SSH."""
    the_lab = Lab.for_inventory(load_inventory(inventory), bare=bare)
    progress = ConsoleProgress()
    try:
        the_lab.up(progress)
    finally:
        progress.close()
    n = len(the_lab.layout.servers)
    kind = " bare" if the_lab.state.bare else ""
    console.print(
        f"lab [bold]{the_lab.name}[/]:{kind} {n} server(s) answer SSH after {time.monotonic() - progress.started:.1f} s"
        f" (known_hosts: {the_lab.state.known_hosts})"
    )


@lab.command("smoke")
@click.argument("inventory", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def smoke(inventory: Path) -> None:
    """Post through one site's VIP and read it back through another's (after `deploykit apply`)."""
    from deploykit.lab.smoke import smoke_test

    result = smoke_test(load_inventory(inventory))
    for line in result.lines:
        console.print(line)
    if not result.ok:
        raise LabError("the smoke test failed: see above")
    console.print("[bold green]smoke test passed[/]")


@lab.command("status")
@inventory_option
def status(inventory: Path | None) -> None:
    """Table of the lab's servers: address, site, state, memory."""
    the_lab = find_lab(inventory)
    table = Table(title=f"lab {the_lab.name}")
    for column in ("server", "address", "site", "state", "memory"):
        table.add_column(column, justify="right" if column == "memory" else "left")
    for row in the_lab.status():
        state = {"running": "[green]running[/]", "stopped": "[red]stopped[/]"}.get(row.state, row.state)
        if row.partitioned:
            state += " [yellow](partitioned)[/]"
        memory = f"{row.memory_bytes / 2**20:.0f} MiB" if row.memory_bytes is not None else "-"
        table.add_row(row.name, row.address, row.site, state, memory)
    Console().print(table)


@lab.command("ssh", context_settings={"ignore_unknown_options": True})
@inventory_option
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(inventory: Path | None, host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST, or run COMMAND there (strict host-key checking)."""
    argv = find_lab(inventory).ssh_argv(host, command, batch=bool(command))
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@lab.command("kill")
@inventory_option
@click.argument("hosts", nargs=-1, required=True)
def kill(inventory: Path | None, hosts: tuple[str, ...]) -> None:
    """Cut the power of HOSTS (SIGKILL of the server's init; its disk stays)."""
    killed = find_lab(inventory).kill(hosts)
    console.print(f"killed: {', '.join(killed) or 'none (not running)'}")


@lab.command("start")
@inventory_option
@click.argument("hosts", nargs=-1, required=True)
def start(inventory: Path | None, hosts: tuple[str, ...]) -> None:
    """Boot HOSTS again (same disk, identity and address); wait until they answer SSH."""
    progress = ConsoleProgress()
    try:
        find_lab(inventory).start(hosts, progress)
    finally:
        progress.close()
    console.print(f"started: {', '.join(hosts)} ({time.monotonic() - progress.started:.1f} s)")


@lab.command("wipe")
@inventory_option
@click.argument("hosts", nargs=-1, required=True)
def wipe(inventory: Path | None, hosts: tuple[str, ...]) -> None:
    """Replace HOSTS as a provider replaces a broken server: same name and address, an empty disk as `lab up`
    made it (no config, no data), a new SSH host key (known_hosts updated); wait until they answer SSH."""
    the_lab = find_lab(inventory)
    progress = ConsoleProgress()
    try:
        wiped = the_lab.wipe(hosts, progress)
    finally:
        progress.close()
    kind = "bare" if the_lab.state.bare else "preinstalled"
    for w in wiped:
        console.print(
            f"wiped {w.name} ({w.address}): empty {kind} disk, new host key {w.host_key} in"
            f" {the_lab.state.known_hosts}; answers SSH", highlight=False,
        )  # fmt: skip


@lab.command("partition")
@inventory_option
@click.argument("target")
@click.option(
    "--keep-controller/--cut-controller", default=True, show_default=True,
    help="Whether this machine (the controller) can still reach the cut-off servers.",
)  # fmt: skip
def partition(inventory: Path | None, target: str, keep_controller: bool) -> None:
    """Cut TARGET (a host, site or provider) off the rest of the lab; it still talks within itself."""
    servers = find_lab(inventory).partition(target, keep_controller=keep_controller)
    mode = "controller keeps access" if keep_controller else "controller cut off too"
    console.print(f"partitioned {target} ({', '.join(servers)}); {mode}")


@lab.command("heal")
@inventory_option
@click.argument("targets", nargs=-1)
def heal(inventory: Path | None, targets: tuple[str, ...]) -> None:
    """Lift the partitions of TARGETS (every partition if none is given)."""
    healed = find_lab(inventory).heal(targets)
    console.print(f"healed: {', '.join(healed) or 'nothing was partitioned'}")


@lab.command("down")
@inventory_option
@click.option("--purge", is_flag=True, help="Also remove the cached base image.")
def down(inventory: Path | None, purge: bool) -> None:
    """Remove every server, mount, bridge, route and rule of the lab."""
    if inventory is None:
        labs = existing_labs()
        if not labs:
            console.print("no lab exists on this machine: nothing to remove")
            return
        the_lab = Lab.running()
    else:
        inv = load_inventory(inventory)
        state = load_state(inv.name)
        the_lab = Lab(state) if state is not None else Lab.for_inventory(inv)
    the_lab.down(purge=purge, progress=ConsoleProgress())
    console.print(f"lab {the_lab.name} removed")


if __name__ == "__main__":  # until deploykit/cli.py registers the group: python -m deploykit.lab.commands
    try:
        lab(standalone_mode=False)
    except DeploykitError as e:
        for line in e.lines():
            console.print(f"[red]error:[/] {line}", highlight=False)
        sys.exit(int(e.exit_code))
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
