"""The `phoenix` command: the Typer application, assembled from a module per command group.

`stack` (up, status, deploy), `serve` (serve, collect), `backup` (backup, backups, restore),
`drill` (drill crash, drill scale, drill swarm ...) and `swarm` (swarm-edge); `edge` turns
the library's errors into messages and exit codes for all of them.
"""

from __future__ import annotations

import os

import typer

from cloud_phoenix.cli import backup, drill, serve, stack, swarm

# What the commands create (the SQLite database and its -wal and -shm, logs/*.log,
# run/status.json, a restored database) holds requests and addresses: this user and its
# group may read it, nobody else, whatever umask the login or the service manager gave.
PRIVATE_UMASK = 0o027

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Phoenix: the application and the platform that keeps it alive.",
)


@cli.callback()
def private_files() -> None:
    """Runs before every command, so that every file it creates is private."""
    os.umask(PRIVATE_UMASK)


# In the order of `phoenix --help`.
cli.command("up")(stack.up)
cli.command("serve")(serve.serve)
cli.command("collect")(serve.collect)
cli.command("status")(stack.status)
cli.command("deploy")(stack.deploy)
backup.register(cli)
cli.add_typer(drill.drill, name="drill")
cli.command("swarm-edge")(swarm.swarm_edge)


def main() -> None:
    cli()
