"""The `phoenix` command: the edge where errors become messages and exit codes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Annotated

import typer

from cloud_phoenix.config import ConfigError, Settings

# Distinct exit codes for "cannot start" (sysexits.h), so that a supervisor stops instead of
# restarting in a loop.
EXIT_UNAVAILABLE = 69  # a service the command needs is down or missing
EXIT_CANT_CREATE = 73  # PHOENIX_HOME or a file in it cannot be written
EXIT_PORT_TAKEN = 75
EXIT_CONFIG = 78  # invalid configuration

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Phoenix: the application and the platform that keeps it alive.",
)


def fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"phoenix: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise fail(f"invalid configuration: {exc}", EXIT_CONFIG) from None


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )


def prepare_home(settings: Settings) -> None:
    for folder in (settings.journal_dir, settings.run_dir, settings.home / "db"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise fail(
                f"PHOENIX_HOME is not writable ({folder}: {exc.strerror}); set "
                "PHOENIX_HOME to a folder this user can write",
                EXIT_CANT_CREATE,
            ) from None


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port ourselves, so that a taken port is a clear error, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror}; is another server using "
            "it? Set PORT to a free port",
            EXIT_PORT_TAKEN,
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@cli.command()
def serve() -> None:
    """Run the application in one process on PORT, with the collector inside it."""
    import uvicorn

    from cloud_phoenix.app import create_app

    settings = load_settings()
    setup_logging(settings)
    prepare_home(settings)
    sock = bind(settings.host, settings.port)
    app = create_app(settings)
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
        forwarded_allow_ips="127.0.0.1",
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
    from cloud_phoenix.platform.collector import Collector
    from cloud_phoenix.store import StoreError, open_store

    settings = load_settings()
    setup_logging(settings)
    prepare_home(settings)
    try:
        store = open_store(settings.db_url)
    except StoreError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None
    collector = Collector(
        store, settings.journal_dir, settings.collect_batch, settings.collect_interval
    )
    if once:
        try:
            collector.collect_once()
            collector.flush()
        except StoreError as exc:
            raise fail(
                f"store unavailable, nothing lost (the journal keeps it): {exc}", EXIT_UNAVAILABLE
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
    logging.getLogger(__name__).info("collecting %s into %s", settings.journal_dir, store.backend)
    try:
        collector.run()
    finally:
        store.close()


def main() -> None:
    cli()
