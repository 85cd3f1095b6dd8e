"""The Phoenix web application: `create_app(settings, store, extensions)` builds it, nothing
happens on import. What keeps it alive plugs its parts in as extensions (app/extension.py)."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_phoenix import __version__
from cloud_phoenix.app import errors, fastlane, pages, routes
from cloud_phoenix.app.extension import Extension, StaticFolders, enter_lifetimes
from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.requestlog import RequestLog
from cloud_phoenix.app.runtime import Runtime
from cloud_phoenix.certs.keymaker import KeyMaker
from cloud_phoenix.certs.pool import KeyPool
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import JournalWriter
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.store import LogStore, StoreError, open_store

__all__ = ["Extension", "PhoenixApp", "build_runtime", "create_app"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def build_runtime(settings: Settings, store: LogStore | None = None) -> Runtime:
    """The parts one serving process needs, not yet started."""
    metrics = Metrics(settings.metrics_dir)
    store = store if store is not None else open_store(settings.db_url)
    keymaker = KeyMaker(settings.cert_concurrency, settings.cert_tick)
    return Runtime(
        settings=settings,
        store=store,
        journal=JournalWriter(settings.journal_dir, instance=settings.instance),
        metrics=metrics,
        pool=KeyPool(
            settings.cert_pool_size,
            settings.cert_concurrency,
            settings.cert_max_wait,
            make=keymaker.make,
            on_change=metrics.spare_keys.set,
        ),
        keymaker=keymaker,
    )


class PhoenixApp(FastAPI):
    """FastAPI behind a front of its own: every HTTP request passes the request log, then
    the fast lanes, and only then FastAPI's middleware stack and router.

    The request log is outermost so that every answer is recorded and carries the request
    id, a 500 made by the framework's error handler included; the catalogue and a ready
    certificate are answered without running the framework's layers at all.
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling: its middleware stack, then the router."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, store: LogStore | None = None, extensions: Sequence[Extension] = ()
) -> PhoenixApp:
    """The ASGI application with the `extensions` a host plugs in; its lifespan starts the
    key pool, then enters what the extensions keep alive (and exits it first)."""
    rt = build_runtime(settings, store)
    extensions = tuple(extensions)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        rt.started = time.monotonic()  # in this worker (with --preload the app predates it)
        rt.pool.start()
        try:
            try:
                rt.store.migrate()
            except StoreError as exc:
                log.warning("store not ready at start (the collector will retry): %s", exc)
            async with AsyncExitStack() as lifetimes:
                await enter_lifetimes(lifetimes, extensions)
                # What exists now (the framework, the routes, the templates) lives as long
                # as the process: out of the garbage collector's sight, it is not walked
                # again and again while requests come and go, which serves more GET / a
                # second (measured: docs/DESIGN-NOTES.md#frozen-start-up-objects).
                gc.collect()
                gc.freeze()
                yield
        finally:
            rt.pool.stop()
            await rt.keymaker.close()
            rt.journal.close()
            rt.store.close()
            gc.unfreeze()  # collectable again, where the process goes on (tests, reloads)

    app = PhoenixApp(
        title="Phoenix",
        version=__version__,
        description="A web service with two endpoints that hurt it, and a platform that keeps "
        "it alive.",
        lifespan=lifespan,
        docs_url=None,
        # Prometheus is this application's telemetry; FastAPI's own (OpenTelemetry) would
        # look up providers and the environment on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        redoc_url=None,
        # No trailing-slash redirect: Starlette builds its Location from the Host header, so
        # the client would choose where the answer points. `/logs/` is a 404 like any typo.
        redirect_slashes=False,
    )
    app.state.runtime = rt
    app.state.templates = pages.templates()
    errors.install(app)
    app.include_router(pages.router)
    app.include_router(routes.router)
    for extension in extensions:
        for router in extension.routers:
            app.include_router(router)
    folders = [STATIC, *(folder for extension in extensions for folder in extension.static)]
    app.mount("/static", StaticFolders(folders), name="static")
    rt.metrics.add_computed(lambda: _lag_figures(rt))
    for extension in extensions:
        for figures in extension.figures:
            rt.metrics.add_computed(figures)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.index_page = pages.render_index(app)
    lanes = fastlane.ReadyCertificates(app.framework, pool=rt.pool, metrics=rt.metrics)
    app.front = RequestLog(
        fastlane.StaticPages(lanes, pages={"/": app.state.index_page}),
        journal=rt.journal,
        metrics=rt.metrics,
        stdout=settings.access_log_stdout,
    )
    return app


def _lag_figures(rt: Runtime) -> dict[str, float]:
    lag = measure_lag(rt.store.positions(), rt.settings.journal_dir, datetime.now(UTC))
    return {
        "phoenix_journal_lag_bytes": float(lag.bytes),
        "phoenix_journal_lag_seconds": lag.seconds,
    }
