"""The `phoenix` command: the edge where errors become messages and exit codes."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from types import FrameType
from typing import Annotated, Any

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.cli.backup import register as register_backup_commands
from cloud_phoenix.config import ConfigError, Settings
from cloud_phoenix.exitcodes import CannotStart

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


def fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"phoenix: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}", exitcodes.CONFIG) from None


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


@cli.command()
def up() -> None:
    """Run the whole stack on PORT: HAProxy, gunicorn workers, collector, autoscaler."""
    from cloud_phoenix.stack.supervisor import Supervisor, log_to_file
    from cloud_phoenix.store import StoreError

    settings = load_settings()
    setup_logging(settings)
    supervisor = Supervisor(settings)
    try:
        supervisor.prepare()
    except CannotStart as exc:
        raise fail(str(exc), exc.code) from None
    except StoreError as exc:  # the database URL cannot be used (a TLS file it names ...)
        raise fail(str(exc), exitcodes.CONFIG) from None
    log_to_file(settings)
    raise typer.Exit(supervisor.run())


@cli.command()
def serve() -> None:
    """Run the application in one process on PORT, with the collector inside it."""
    import uvicorn

    from cloud_phoenix.app import create_app
    from cloud_phoenix.stack.host import listen, prepare_home
    from cloud_phoenix.store import StoreError

    settings = load_settings()
    setup_logging(settings)
    try:
        prepare_home(settings)
        sock = listen(settings.host, settings.port, "application", backlog=2048)
        app = create_app(settings)
    except CannotStart as exc:
        raise fail(str(exc), exc.code) from None
    except StoreError as exc:  # the database URL cannot be used (a TLS file it names ...)
        raise fail(str(exc), exitcodes.CONFIG) from None
    host, port = sock.getsockname()[:2]
    logging.getLogger(__name__).info(
        "serving on http://%s:%d (store %s)", host, port, app.state.runtime.store.backend
    )
    # Hand uvicorn the socket object, not `fd=`: uvicorn rebuilds an fd as AF_UNIX, and then
    # TCP_NODELAY is never set and every response waits ~40 ms on delayed ACKs.
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
        proxy_headers=True,
        server_header=False,  # no "server: uvicorn": nothing to tell a scanner
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # Longer than a load balancer's idle timeout (the ALB's is 60 s): the balancer, not
        # this server, closes idle connections, so it never sends into a closing one.
        timeout_keep_alive=75,
    )
    # uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, into the handler that
    # was there before it: make that a no-op, so that a graceful stop exits 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _after_graceful_stop)
    uvicorn.Server(config).run(sockets=[sock])
    logging.getLogger(__name__).info("stopped")


def _after_graceful_stop(_signum: int, _frame: FrameType | None) -> None:
    """Reached only after uvicorn has drained and shut the application down."""


@cli.command()
def collect(
    once: Annotated[bool, typer.Option(help="Collect what is there, then exit.")] = False,
) -> None:
    """Tail the journal into the store (exactly once) until stopped."""
    from cloud_phoenix.collector.loop import Collector
    from cloud_phoenix.proc.background import release_stops
    from cloud_phoenix.stack.host import prepare_home
    from cloud_phoenix.store import StoreError, open_store

    settings = load_settings()
    setup_logging(settings)
    try:
        prepare_home(settings)
        store = open_store(settings.db_url)
    except CannotStart as exc:
        raise fail(str(exc), exc.code) from None
    except StoreError as exc:
        raise fail(str(exc), exitcodes.CONFIG) from None
    collector = Collector(
        store, settings.journal_dir, settings.collect_batch, settings.collect_interval
    )
    if once:
        try:
            collector.collect_once()
            collector.flush()
        except StoreError as exc:
            raise fail(
                f"store unavailable, nothing lost (the journal keeps it): {exc}",
                exitcodes.UNAVAILABLE,
            ) from None
        finally:
            store.close()
        typer.echo(
            f"collected {collector.stats.records} records "
            f"({collector.stats.malformed} malformed lines skipped)"
        )
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        collector.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Started as a child, it may have held a stop since its start (proc.background.stops_held):
    # the stop reaches `stop` now, and `run` makes its pass before it returns.
    release_stops()
    logging.getLogger(__name__).info("collecting %s into %s", settings.journal_dir, store.backend)
    try:
        collector.run()
    finally:
        store.close()


def _running_stack(settings: Settings) -> dict[str, Any]:
    """The status of the stack running on this home, or a clear exit when there is none."""
    from cloud_phoenix.stack.status import read_status, supervisor_alive

    data = read_status(settings.run_dir)
    if data is None or not supervisor_alive(data):
        raise fail(
            f"no stack is running with PHOENIX_HOME={settings.home}: start one with `phoenix up`",
            exitcodes.NOT_RUNNING,
        )
    return data


def _stack_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{_running_stack(settings)['port']}"


@cli.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show the running stack: workers, request rate, restarts, recent events."""
    from cloud_phoenix.stack.status_view import render_status

    settings = load_settings()
    data = _running_stack(settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        render_status(data)


drill_cli = typer.Typer(no_args_is_help=True, help="Bounded drills against the local stack.")
cli.add_typer(drill_cli, name="drill")


@drill_cli.command("crash")
def drill_crash(
    seconds: Annotated[float, typer.Option(min=1, max=600, help="How long.")] = 20.0,
    rps: Annotated[float, typer.Option(min=1, max=2000, help="Background load.")] = 100.0,
    every: Annotated[float, typer.Option(min=0.05, max=60, help="Seconds between crashes.")] = 0.25,
) -> None:
    """A /crash every EVERY s for SECONDS s under RPS req/s of GET / and /logs."""
    from cloud_phoenix.drill.drills import crash_drill
    from cloud_phoenix.store import open_store

    settings = load_settings()
    base_url = _stack_url(settings)
    store = open_store(settings.db_url)
    try:
        report = crash_drill(
            base_url,
            settings.run_dir,
            store,
            seconds=seconds,
            rps=rps,
            crash_every=every,
            progress=typer.echo,
        )
    finally:
        store.close()
    typer.echo(
        f"requests sent        {report.sent} (and {report.crashes} /crash)\n"
        f"failed (not /crash)  {sum(report.failed.values())} {report.failed or ''}\n"
        f"latency p50 / p99    {report.p50_ms or 0:.1f} / {report.p99_ms or 0:.1f} ms\n"
        f"longest below desired workers  {report.longest_below_desired_s:.2f} s\n"
        f"records missing      {len(report.missing)} {report.missing[:5] or ''}\n"
        f"records doubled      {len(report.doubled)} {report.doubled[:5] or ''}"
    )
    typer.secho(
        "PASSED" if report.passed else "FAILED",
        fg=typer.colors.GREEN if report.passed else typer.colors.RED,
    )
    raise typer.Exit(0 if report.passed else 1)


@drill_cli.command("scale")
def drill_scale(
    rps: Annotated[float, typer.Option(min=1, max=2000, help="Load of the ramp.")] = 50.0,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="How long the load lasts.")] = 10.0,
) -> None:
    """Ramp the load over the scaling threshold and back; report the reaction times."""
    from cloud_phoenix.drill.drills import scale_drill

    settings = load_settings()
    base_url = _stack_url(settings)
    report = scale_drill(
        base_url,
        settings.run_dir,
        rps=rps,
        seconds=seconds,
        rps_per_worker=settings.scale_rps,
        min_workers=settings.min_workers,
        settle=settings.scale_in_window + 15,
        progress=typer.echo,
    )
    out = "never" if report.scale_out_s is None else f"{report.scale_out_s:.1f} s"
    back = "never" if report.scale_in_s is None else f"{report.scale_in_s:.1f} s"
    typer.echo(
        f"{report.target_workers} workers expected for {report.rps:g} req/s; peak "
        f"{report.peak_workers}\nscale-out reached in {out} after the load started\n"
        f"back at {settings.min_workers} in {back} after the load stopped\n"
        f"failed requests {sum(report.failed.values())} {report.failed or ''}"
    )
    raise typer.Exit(0 if report.passed else 1)


@cli.command()
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
    from cloud_phoenix.stack.status import supervisor_alive

    settings = load_settings()
    data = _running_stack(settings)
    pid = int(data["supervisor_pid"])
    wait = timeout + 2 * settings.graceful_timeout + 30  # ready, drained, and some slack
    try:
        request = request_deploy(settings.run_dir, pid, app or "", timeout)
        result = await_result(settings.run_dir, request, pid, wait, typer.echo)
    except DeployUnanswered as exc:
        code = exitcodes.UNAVAILABLE if supervisor_alive(data) else exitcodes.NOT_RUNNING
        raise fail(str(exc), code) from None
    if result.get("state") != "ok":
        raise fail(f"deploy {request.id} {describe(result)}", 1)
    typer.echo(describe(result))


register_backup_commands(cli)


def main() -> None:
    cli()
