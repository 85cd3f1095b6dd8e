"""`phoenix serve` (the application in one process, the collector inside it) and
`phoenix collect` (the collector on its own)."""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Annotated

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.cli.edge import edge, fail, load_settings, setup_logging
from cloud_phoenix.config import Settings

log = logging.getLogger(__name__)


@edge
def serve() -> None:
    """Run the application in one process on PORT, with the collector inside it."""
    import uvicorn

    from cloud_phoenix.stack.host import listen, prepare_home
    from cloud_phoenix.stack.workerapp import served_app

    settings = load_settings()
    setup_logging(settings)
    prepare_home(settings)
    sock = listen(
        settings.host, settings.port, "application", backlog=2048, reuse_port=settings.reuse_port
    )
    app = served_app(settings)
    host, port = sock.getsockname()[:2]
    log.info("serving on http://%s:%d (store %s)", host, port, app.state.runtime.store.backend)
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
    log.info("stopped")


def _drain(settings: Settings, within: float) -> None:
    from cloud_phoenix.collector.drain import wait_collected

    drained = wait_collected(settings, within)
    if not drained.collected:
        left = "unknown (the store never answered)"
        if drained.bytes_left is not None:
            left = f"{drained.bytes_left} bytes"
        raise fail(
            f"the journal is not all in the store after {drained.waited:.0f} s: {left} "
            "left in the journal",
            exitcodes.TEMPFAIL,
        )
    log.info("drain: the store holds the whole journal (waited %.1f s)", drained.waited)


def _after_graceful_stop(_signum: int, _frame: FrameType | None) -> None:
    """Reached only after uvicorn has drained and shut the application down."""


@edge
def collect(
    once: Annotated[bool, typer.Option(help="Collect what is there, then exit.")] = False,
    drain: Annotated[
        float | None,
        typer.Option(
            min=0,
            max=86400,
            metavar="SECONDS",
            help="Collect nothing: wait, at most SECONDS, until the running collector has "
            "stored the whole journal (a pod's preStop); exit 0 then, 75 if not.",
        ),
    ] = None,
) -> None:
    """Tail the journal into the store (exactly once) until stopped."""
    from cloud_phoenix.collector.loop import Collector
    from cloud_phoenix.proc.background import release_stops
    from cloud_phoenix.stack.host import prepare_home
    from cloud_phoenix.store import StoreError, open_store

    settings = load_settings()
    setup_logging(settings)
    if drain is not None:
        _drain(settings, drain)
        return
    prepare_home(settings)
    store = open_store(settings.db_url)
    collector = Collector.from_settings(store, settings)
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
    # Started as a child, it may have held a stop since its start (childproc.stops_held):
    # the stop reaches `stop` now, and `run` makes its pass before it returns.
    release_stops()
    log.info("collecting %s into %s", settings.journal_dir, store.backend)
    try:
        collector.run()
    finally:
        store.close()
