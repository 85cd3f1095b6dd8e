"""`python -m cloud_phoenix.containers`: a private Docker Engine, and the image built in it.

    python -m cloud_phoenix.containers engine start /tmp/phoenix-engine   # prints DOCKER_HOST
    python -m cloud_phoenix.containers build --engine /tmp/phoenix-engine --offline \\
        --rds-ca-bundle rds-global-bundle.pem
    python -m cloud_phoenix.containers engine stop /tmp/phoenix-engine    # removes it all

Errors are messages with sysexits codes; the progress of long steps goes to stderr.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import ContainerError, DockerCli, find_cli
from cloud_phoenix.containers.engine import PrivateEngine, engine_env
from cloud_phoenix.containers.image import ImageBuilder

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="A private Docker Engine, and the image built from the repository's Dockerfile.",
)
engine_cli = typer.Typer(no_args_is_help=True, help="A private Docker Engine in a folder.")
cli.add_typer(engine_cli, name="engine")

Folder = Annotated[Path, typer.Argument(help="The engine's folder (short: sockets live in it).")]


def fail(exc: ContainerError) -> typer.Exit:
    typer.secho(f"containers: {exc}", err=True, fg=typer.colors.RED)
    return typer.Exit(exc.code)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="containers: %(message)s", stream=sys.stderr)


def progress(line: str) -> None:
    typer.echo(f"  | {line}", err=True)


@engine_cli.command("start")
def engine_start(folder: Folder) -> None:
    """Start dockerd in FOLDER and wait until it answers; print the shell's exports."""
    setup_logging()
    engine = PrivateEngine(folder)
    try:
        engine.start()
    except ContainerError as exc:
        raise fail(exc) from None
    for name, value in engine_env(engine.paths).items():
        typer.echo(f"export {name}={shlex.quote(value)}")


@engine_cli.command("stop")
def engine_stop(folder: Folder) -> None:
    """Remove the engine in FOLDER with its containers, swarm, volumes, and the folder."""
    setup_logging()
    try:
        PrivateEngine(folder).stop()
    except ContainerError as exc:
        raise fail(exc) from None


@cli.command()
def build(
    tag: Annotated[str, typer.Option(help="The image's name and tag.")] = "cloud-phoenix:dev",
    engine: Annotated[
        Path | None, typer.Option(help="A private engine's folder (default: the machine's).")
    ] = None,
    offline: Annotated[
        bool, typer.Option(help="No registry: a Debian base and a wheelhouse made here.")
    ] = False,
    rds_ca_bundle: Annotated[
        Path | None,
        typer.Option(help="A local RDS CA bundle instead of fetching AWS's at build time."),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Cache folder (default: $XDG_CACHE_HOME/cloud-phoenix).")
    ] = None,
    repo: Annotated[Path, typer.Option(help="The checkout holding the Dockerfile.")] = Path(),
) -> None:
    """Build the image from the repository's Dockerfile; print its tag, time and size."""
    setup_logging()
    if not (repo / "Dockerfile").is_file():
        typer.secho(f"containers: no Dockerfile in {repo.absolute()}", err=True, fg="red")
        raise typer.Exit(exitcodes.CONFIG)
    if offline and rds_ca_bundle is None:
        typer.secho(
            "containers: an offline build cannot fetch the RDS CA bundle from AWS: give a "
            "local copy with --rds-ca-bundle FILE",
            err=True,
            fg="red",
        )
        raise typer.Exit(exitcodes.USAGE)
    try:
        docker = PrivateEngine(engine).docker() if engine else DockerCli(find_cli())
        builder = ImageBuilder(docker, repo.absolute(), cache, sink=progress)
        if offline:
            assert rds_ca_bundle is not None
            result = builder.build_offline(tag, rds_ca_bundle)
        else:
            result = builder.build(tag, rds_ca_bundle=rds_ca_bundle)
    except ContainerError as exc:
        raise fail(exc) from None
    typer.echo(f"{result.tag}: built in {result.seconds:.0f} s, {result.size / 1e6:.0f} MB")


if __name__ == "__main__":
    cli()
