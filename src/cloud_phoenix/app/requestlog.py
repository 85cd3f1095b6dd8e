"""The ASGI middleware that gives each request an id and records it once answered.

It wraps the whole application so that every request, including a 404 and an error,
appends exactly one line to the journal, one combined-format line to stdout, and its
figures to the metrics. The line is written just before the last piece of the response
is handed to the server, never after the client could have it. `/crash` calls the
recorder itself before the process exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time

log = logging.getLogger(__name__)

FINISH_KEY = "phoenix.finish"
REQUEST_ID_KEY = "phoenix.request_id"
MAX_REQUEST_ID = 128
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
        b"form-action 'self'",
    ),
]


def valid_request_id(value: str) -> bool:
    """At most 128 visible ASCII characters (no spaces, no control characters)."""
    return 0 < len(value) <= MAX_REQUEST_ID and all(33 <= ord(c) <= 126 for c in value)


def worker_id() -> str:
    """`host:pid` of the serving process (computed per call: workers are forked)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def combined_line(record: AccessRecord, http_version: str, started: datetime) -> bytes:
    """The Apache/Node `combined` access-log format, as the original application printed."""
    target = record.path + (f"?{record.query}" if record.query else "")
    stamp = started.strftime("%d/%b/%Y:%H:%M:%S +0000")
    size = str(record.bytes) if record.bytes else "-"
    referrer = record.referrer.replace('"', '\\"') or "-"
    agent = record.user_agent.replace('"', '\\"') or "-"
    return (
        f'{record.remote_addr or "-"} - - [{stamp}] "{record.method} {target} HTTP/{http_version}" '
        f'{record.status} {size} "{referrer}" "{agent}"\n'
    ).encode("utf-8", "replace")


class RequestLog:
    """Request id, security headers, journal line, stdout line and metrics for each request."""

    def __init__(
        self, app: ASGIApp, journal: JournalWriter, metrics: Metrics, stdout: bool = True
    ) -> None:
        self.app = app
        self.journal = journal
        self.metrics = metrics
        self.stdout = stdout
        self._worker = worker_id()
        self._pid = os.getpid()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = datetime.now(UTC)
        clock = time.perf_counter()
        headers = _headers(scope)
        request_id = headers.get("x-request-id", "")
        if not valid_request_id(request_id):
            request_id = uuid.uuid4().hex
        if self._pid != os.getpid():  # forked after construction
            self._pid, self._worker = os.getpid(), worker_id()
        worker = self._worker
        # HAProxy's health checks reach the workers directly; anything from a client comes
        # through the edge, which always sets X-Forwarded-For, so a client cannot pose as one.
        probe = (
            scope["path"] == "/health"
            and "x-phoenix-probe" in headers
            and "x-forwarded-for" not in headers
        )
        state = {"status": 500, "bytes": 0, "done": False}
        response_headers = [
            (b"x-request-id", request_id.encode()),
            (b"x-phoenix-worker", worker.encode()),
            *SECURITY_HEADERS,
        ]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), *response_headers]
            elif message["type"] == "http.response.body":
                state["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Record, then answer: a worker killed after the client has its answer
                    # must not take the record with it.
                    finish()
            await send(message)

        def finish(status: int | None = None) -> None:
            if state["done"]:
                return
            state["done"] = True
            if probe:  # the edge's own health check: counted in the metrics, not a request
                self.metrics.requests.labels("/health", "GET", str(state["status"])).inc()
                return
            duration = time.perf_counter() - clock
            client = scope.get("client")
            record = AccessRecord(
                time=format_time(started),
                method=scope["method"],
                path=scope["path"],
                query=scope.get("query_string", b"").decode("latin-1"),
                status=status if status is not None else int(state["status"]),
                bytes=int(state["bytes"]),
                duration_ms=round(duration * 1000, 3),
                remote_addr=client[0] if client else "",
                user_agent=headers.get("user-agent", ""),
                referrer=headers.get("referer", ""),
                worker=worker,
                request_id=request_id,
            )
            self._record(record, scope, started, duration)

        scope[FINISH_KEY] = finish
        scope[REQUEST_ID_KEY] = request_id
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()

    def _record(
        self, record: AccessRecord, scope: Scope, started: datetime, duration: float
    ) -> None:
        try:
            self.journal.append(record)
        except OSError as exc:
            self.metrics.journal_errors.inc()
            log.error("journal write failed, request %s not recorded: %s", record.request_id, exc)
        if self.stdout:
            with contextlib.suppress(OSError):  # a closed stdout must not fail the request
                os.write(1, combined_line(record, scope.get("http_version", "1.1"), started))
        route = _route_label(scope)
        self.metrics.requests.labels(route, record.method, str(record.status)).inc()
        self.metrics.latency.labels(route).observe(duration)


def _headers(scope: Scope) -> dict[str, str]:
    wanted = {b"x-request-id", b"user-agent", b"referer", b"x-phoenix-probe", b"x-forwarded-for"}
    found: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name in wanted:
            found[name.decode()] = value.decode("latin-1")
    return found


def _route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path if path else "unmatched"


FinishCallback = Callable[[int | None], None]
