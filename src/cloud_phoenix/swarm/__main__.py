"""`python -m cloud_phoenix.swarm up|down` (what `scripts/swarm` runs): the Docker Swarm
stack on this machine, loopback only, and everything it needs; then all of it removed.

Progress goes to stderr; `up` ends with the edge's URL alone on stdout's last line.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.config import ConfigError, Settings
from cloud_phoenix.containers.dockercli import ContainerError
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.store.urls import url_backend
from cloud_phoenix.swarm.api import DockerApiError
from cloud_phoenix.swarm.up import SwarmUp, UpOptions

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="cloud-phoenix on a single-node Docker Swarm on loopback: up, then down.",
)

REPO = Path(__file__).resolve().parents[3]  # src/cloud_phoenix/swarm -> the checkout
State = Annotated[
    Path,
    typer.Option(
        "--state",
        help="Where up keeps what it made (state.json, a private engine, PostgreSQL).",
    ),
]
DEFAULT_STATE = Path("var") / "swarm"


def progress(message: str) -> None:
    typer.echo(f"swarm: {message}", err=True)


def build_line(line: str) -> None:
    typer.echo(f"  | {line}", err=True)


def fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"swarm: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}", exitcodes.CONFIG) from None


@cli.command()
def up(
    state: State = DEFAULT_STATE,
    stack: Annotated[str, typer.Option(help="The stack's name.")] = "phoenix",
    image: Annotated[str, typer.Option(help="The image's tag.")] = "cloud-phoenix:local",
    build: Annotated[
        bool, typer.Option(help="Build the image from the Dockerfile (--no-build: it is there).")
    ] = True,
    offline: Annotated[
        bool, typer.Option(help="Build with no registry: a Debian base and a wheelhouse.")
    ] = False,
    rds_ca_bundle: Annotated[
        Path | None, typer.Option(help="A local RDS CA bundle for the build (offline: needed).")
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            help="auto: the machine's Docker if it answers, else a private one; "
            "private; machine (DOCKER_HOST or /var/run/docker.sock)."
        ),
    ] = "auto",
    timeout: Annotated[float, typer.Option(min=10, help="Seconds to wait for the stack.")] = 300,
) -> None:
    """Start the stack: PORT (8080) for the edge, PHOENIX_MIN_REPLICAS, PHOENIX_MAX_REPLICAS,
    PHOENIX_SCALE_RPS, PHOENIX_SCALE_IN_WINDOW from the environment; DB_CONNECTION_STRING
    if it is a PostgreSQL URL, else a PostgreSQL of its own."""
    logging.basicConfig(level=logging.WARNING, format="swarm: %(message)s", stream=sys.stderr)
    if engine not in {"auto", "private", "machine"}:
        raise fail(f"--engine {engine!r}: auto, private or machine", exitcodes.USAGE)
    settings = _settings()
    db_url = os.environ.get("DB_CONNECTION_STRING", "")
    if db_url and url_backend(db_url) != "postgresql":
        raise fail(
            "DB_CONNECTION_STRING must be a PostgreSQL URL for the swarm (the replicas share "
            "it), or unset for a PostgreSQL of its own",
            exitcodes.CONFIG,
        )
    options = UpOptions(
        repo=REPO,
        port=settings.port,
        stack=stack,
        image=image,
        build=build,
        offline=offline,
        rds_ca_bundle=rds_ca_bundle,
        db_url=db_url,
        engine=engine,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        scale_rps=settings.scale_rps,
        scale_in_window=settings.scale_in_window,
        timeout=timeout,
    )
    try:
        made = SwarmUp(state, progress, build_line).up(options)
    except (CannotStart, ContainerError, DockerApiError) as exc:
        raise fail(str(exc), exc.code) from None
    progress(f"up: {stack} on Docker Swarm; `scripts/swarm down --state {state}` removes it")
    typer.echo(made.url)


@cli.command()
def down(state: State = DEFAULT_STATE) -> None:
    """Remove everything `up` made with this state folder: the stack and its volumes (the
    slots' journals, the backups), the secret, the swarm, a private engine, a PostgreSQL of
    its own and its data."""
    logging.basicConfig(level=logging.WARNING, format="swarm: %(message)s", stream=sys.stderr)
    try:
        problems = SwarmUp(state, progress).down()
    except CannotStart as exc:
        raise fail(str(exc), exc.code) from None
    if problems:
        for problem in problems:
            progress(f"not removed: {problem}")
        raise fail("down left the above; run it again, or remove them by hand", 1)
    progress("down: nothing left")


if __name__ == "__main__":
    cli()
