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
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time

log = logging.getLogger(__name__)

FINISH_KEY = "phoenix.finish"
REQUEST_ID_KEY = "phoenix.request_id"
ROUTE_KEY = "phoenix.route"  # set by handlers outside the router (the static pages)
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
    """Request id, security headers, journal line, stdout line and metrics for each request.

    This runs for every request, so it is written for speed: no framework objects, one pass
    over the headers, the time formatted once, metric children cached by label.
    """

    def __init__(
        self, app: ASGIApp, journal: JournalWriter, metrics: Metrics, stdout: bool = True
    ) -> None:
        self.app = app
        self.journal = journal
        self.metrics = metrics
        self.stdout = stdout
        self._worker = worker_id()
        self._worker_header = (b"x-phoenix-worker", self._worker.encode())
        self._pid = os.getpid()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        clock = time.perf_counter()
        request_id = user_agent = referrer = ""
        probe = forwarded = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referrer = value.decode("latin-1")
            elif name == b"x-phoenix-probe":
                probe = True
            elif name == b"x-forwarded-for":
                forwarded = True
        if not valid_request_id(request_id):
            request_id = os.urandom(16).hex()
        if self._pid != os.getpid():  # forked after construction (gunicorn --preload)
            self._pid, self._worker = os.getpid(), worker_id()
            self._worker_header = (b"x-phoenix-worker", self._worker.encode())
        # HAProxy's health checks reach the workers directly; anything from a client comes
        # through the edge, which always sets X-Forwarded-For, so a client cannot pose as one.
        probe = probe and not forwarded and scope["path"] == "/health"
        status = 500
        sent = 0
        done = False
        extra_headers = [
            (b"x-request-id", request_id.encode()),
            self._worker_header,
            *SECURITY_HEADERS,
        ]

        def finish(final_status: int | None = None) -> None:
            nonlocal done
            if done:
                return
            done = True
            duration = time.perf_counter() - clock
            code = status if final_status is None else final_status
            if probe:  # the edge's own health check: counted in the metrics, not a request
                self.metrics.observe("/health", "GET", code, duration)
                return
            client = scope.get("client")
            record = AccessRecord(
                time=format_time(datetime.fromtimestamp(started, UTC)),
                method=scope["method"],
                path=scope["path"],
                query=scope["query_string"].decode("latin-1"),
                status=code,
                bytes=sent,
                duration_ms=round(duration * 1000, 3),
                remote_addr=client[0] if client else "",
                user_agent=user_agent,
                referrer=referrer,
                worker=self._worker,
                request_id=request_id,
            )
            self._record(record, scope, started, duration)

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    # Record, then answer: a worker killed after the client has its answer
                    # must not take the record with it.
                    finish()
            await send(message)

        scope[FINISH_KEY] = finish
        scope[REQUEST_ID_KEY] = request_id
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()

    def _record(self, record: AccessRecord, scope: Scope, started: float, duration: float) -> None:
        try:
            self.journal.append(record)
        except OSError as exc:
            self.metrics.journal_errors.inc()
            log.error("journal write failed, request %s not recorded: %s", record.request_id, exc)
        if self.stdout:
            with contextlib.suppress(OSError):  # a closed stdout must not fail the request
                os.write(
                    1,
                    combined_line(
                        record,
                        scope.get("http_version", "1.1"),
                        datetime.fromtimestamp(started, UTC),
                    ),
                )
        self.metrics.observe(_route_label(scope), record.method, record.status, duration)


def _route_label(scope: Scope) -> str:
    route: Any = scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path or scope.get(ROUTE_KEY) or "unmatched"
