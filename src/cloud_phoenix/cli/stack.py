"""`phoenix up`, `phoenix status`, `phoenix deploy`: the stack and what it says of itself."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.cli.edge import edge, fail, load_settings, setup_logging
from cloud_phoenix.config import Settings
from cloud_phoenix.stack.status import StackStatus, read_status, supervisor_alive


@edge
def up() -> None:
    """Run the whole stack on PORT: HAProxy, gunicorn workers, collector, autoscaler."""
    from cloud_phoenix.stack.supervisor import Supervisor, log_to_file

    settings = load_settings()
    setup_logging(settings)
    supervisor = Supervisor(settings)
    supervisor.prepare()
    log_to_file(settings)
    raise typer.Exit(supervisor.run())


def running_stack(settings: Settings) -> StackStatus:
    """The status of the stack running on this home, or a clear exit when there is none."""
    status = read_status(settings.run_dir)
    if status is None or not supervisor_alive(status):
        raise fail(
            f"no stack is running with PHOENIX_HOME={settings.home}: start one with `phoenix up`",
            exitcodes.NOT_RUNNING,
        )
    return status


@edge
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the running stack: workers, request rate, restarts, recent events."""
    from cloud_phoenix.stack.status_view import render_status

    found = running_stack(load_settings())
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
    else:
        render_status(found)


@edge
def deploy(
    app: Annotated[
        str | None,
        typer.Option(
            help="What the new workers serve (module:attribute), for this stack's life; "
            "default PHOENIX_WORKER_APP. For tests and for switching apps."
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=1, max=3600, help="Seconds the new workers get to pass /ready.")
    ] = 60.0,
) -> None:
    """Reload the running stack onto the code now on disk, without dropping a request.

    New workers start beside the old ones and must pass /ready within TIMEOUT s; then the
    old ones drain. If the new ones fail, the old ones stay: exit 1 with the reason.
    """
    from cloud_phoenix.stack.deploy import DeployUnanswered, await_result, request_deploy
    from cloud_phoenix.stack.deploy.protocol import describe

    settings = load_settings()
    stack = running_stack(settings)
    pid = stack.supervisor_pid
    wait = timeout + 2 * settings.graceful_timeout + 30  # ready, drained, and some slack
    try:
        request = request_deploy(settings.run_dir, pid, app or "", timeout)
        result = await_result(settings.run_dir, request, pid, wait, typer.echo)
    except DeployUnanswered as exc:
        code = exitcodes.UNAVAILABLE if supervisor_alive(stack) else exitcodes.NOT_RUNNING
        raise fail(str(exc), code) from None
    if result.state != "ok":
        raise fail(f"deploy {request.id} {describe(result)}", 1)
    typer.echo(describe(result))
