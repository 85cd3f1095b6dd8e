"""Fast lanes: the hottest answers, given without the framework's routing.

`GET /` is a page fixed for the life of the process, and a `GET /generatecert` without
parameters finds, most of the time, a spare key whose certificate is already signed and
serialised. Both are answered here, inside the request log (so recorded like any request);
everything else, and these paths when the lane cannot answer, goes on to the application.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.requestlog import ROUTE_KEY
from cloud_phoenix.certs.keys import SpareKey
from cloud_phoenix.certs.pool import KeyPool

CERTIFICATE_PATH = "/generatecert"
_JSON_NO_STORE = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


class StaticPages:
    """Pages fixed for the life of the process (the catalogue), answered without the
    framework's routing: `GET /` is the most requested page and the cheapest to answer."""

    def __init__(self, app: ASGIApp, pages: dict[str, bytes]) -> None:
        self.app = app
        self.pages = {
            path: (
                body,
                [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            for path, body in pages.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = self.pages.get(scope["path"]) if scope["type"] == "http" else None
        if page is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = scope["path"]
        await send({"type": "http.response.start", "status": 200, "headers": page[1]})
        await send({"type": "http.response.body", "body": page[0]})


class ReadyCertificates:
    """`GET /generatecert` with no parameters, answered from a spare whose default
    certificate is fresh; otherwise (none spare, a stale one, parameters) the route does it."""

    def __init__(self, app: ASGIApp, pool: KeyPool[SpareKey], metrics: Metrics) -> None:
        self.app = app
        self.pool = pool
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != CERTIFICATE_PATH
            or scope["method"] != "GET"
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        spare = self.pool.take_ready(lambda s: s.fresh(now) and bool(s.ready_json))
        if spare is None:
            await self.app(scope, receive, send)
            return
        scope[ROUTE_KEY] = CERTIFICATE_PATH
        body = spare.ready_json
        headers = [*_JSON_NO_STORE, (b"content-length", str(len(body)).encode())]
        self.metrics.certificates.inc()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
