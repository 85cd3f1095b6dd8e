"""The ASGI middleware that gives each request an id and records it once answered.

It wraps the whole application so that every request, including a 404 and an error,
appends exactly one line to the journal, one combined-format line to stdout (inside a JSON
object with PHOENIX_LOG_FORMAT=json), and its figures to the metrics. The line is written
just before the last piece of the response is handed to the server, never after the client
could have it. `/crash` calls the recorder itself before the process exits. While a request
is answered, its id is on every log line of the process (logformat.REQUEST_ID).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.journal import (
    AccessRecord,
    JournalWriter,
    TimeFormatter,
    cap_value,
    journal_line,
)
from cloud_phoenix.logformat import REQUEST_ID, iso_time, json_line
from cloud_phoenix.probes import PROBE_HEADER, PROBE_PATHS, probe_kind

log = logging.getLogger(__name__)

_PROBE_HEADER = PROBE_HEADER.lower().encode()  # as the server hands header names over
_PROBE_PATHS = frozenset(PROBE_PATHS)  # looked up for every request

FINISH_KEY = "phoenix.finish"
REQUEST_ID_KEY = "phoenix.request_id"
ROUTE_KEY = "phoenix.route"  # set by handlers outside the router (the static pages)
MAX_REQUEST_ID = 128
COMBINED_TIME = "%d/%b/%Y:%H:%M:%S +0000"
ACCESS_LOGGER = "cloud_phoenix.access"  # the `logger` of an access line in JSON
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


# The bytes an access line prints as they are: printable ASCII but the quote and the backslash.
_PLAIN = bytes(byte for byte in range(0x20, 0x7F) if byte not in b'"\\')
# Every other byte is printed as \xHH (for str.translate over the bytes decoded as Latin-1).
_ESCAPES = {byte: f"\\x{byte:02X}" for byte in range(0x100) if byte not in _PLAIN}
# What is left of a combined line once its plain bytes are taken out: its own six quotes
# and its newline. Anything more is a value to escape.
_LINE_FRAME = b'""""""\n'


def log_escape(value: str) -> str:
    """`value` for an access line, as nginx escapes its variables: printable ASCII as it is,
    `\\xHH` for each byte of a control character, of a character past ASCII (its UTF-8
    form), of the quote and of the backslash. No client text can end a field or the line."""
    # surrogatepass: a lone surrogate from a header is still printed, as its three bytes.
    data = value.encode("utf-8", "surrogatepass")
    if not data.translate(None, _PLAIN):
        return value
    return data.decode("latin-1").translate(_ESCAPES)


def valid_request_id(value: str) -> bool:
    """At most 128 visible ASCII characters (no spaces, no control characters)."""
    return 0 < len(value) <= MAX_REQUEST_ID and all(33 <= ord(c) <= 126 for c in value)


class _Worker:
    """`host:pid` of this process and its response header, renamed in a forked child:
    no system call per request to learn a pid that changes only at a fork."""

    name = ""
    header = (b"x-phoenix-worker", b"")

    @classmethod
    def identify(cls) -> None:
        cls.name = f"{socket.gethostname()}:{os.getpid()}"
        cls.header = (b"x-phoenix-worker", cls.name.encode())


_Worker.identify()
os.register_at_fork(after_in_child=_Worker.identify)


def worker_id() -> str:
    """`host:pid` of the serving process (a forked worker has its own)."""
    return _Worker.name


def combined_line(record: AccessRecord, http_version: str, started: datetime) -> bytes:
    """The Apache/Node `combined` access-log format, as the original application printed."""
    return _combined(record, http_version, started.strftime(COMBINED_TIME))


def _combined(record: AccessRecord, http_version: str, stamp: str) -> bytes:
    target = record.path + (f"?{record.query}" if record.query else "")
    size = str(record.bytes) if record.bytes else "-"
    line = (
        f'{record.remote_addr or "-"} - - [{stamp}] "{record.method} {target} HTTP/{http_version}" '
        f'{record.status} {size} "{record.referrer or "-"}" "{record.user_agent or "-"}"\n'
    )
    # Every value a client sets (the remote address too: X-Forwarded-For from a trusted
    # proxy) is escaped, so that a decoded %0a in the path cannot forge a line. The common
    # case is checked on the whole line in one pass in C; only a line with something to
    # escape is built again, field by field.
    if line.isascii():
        data = line.encode()
        if data.translate(None, _PLAIN) == _LINE_FRAME:
            return data
    return (
        f"{log_escape(record.remote_addr) or '-'} - - [{stamp}] "
        f'"{log_escape(record.method)} {log_escape(target)} HTTP/{http_version}" '
        f'{record.status} {size} "{log_escape(record.referrer) or "-"}" '
        f'"{log_escape(record.user_agent) or "-"}"\n'
    ).encode()


def access_json(line: bytes, started: float, request_id: str) -> bytes:
    """A combined line as the JSON object of a log line: its text is the message."""
    fields = {
        "time": iso_time(started),
        "level": "info",
        "logger": ACCESS_LOGGER,
        "message": line.decode("latin-1").rstrip("\n"),
        "pid": os.getpid(),
        "request_id": request_id,
    }
    return json_line(fields).encode() + b"\n"


def new_request_id() -> str:
    """128 random bits in hex. A correlation id, not a secret: the process's Mersenne Twister
    (seeded from the OS, reseeded in every forked child) is enough and costs no system call."""
    return f"{random.getrandbits(128):032x}"


class RequestLog:
    """Request id, security headers, journal line, stdout line and metrics for each request.

    This runs for every request, so it is written for speed: no framework objects, one pass
    over the headers, the time formatted once a second, metric children cached by label.
    """

    def __init__(
        self,
        app: ASGIApp,
        journal: JournalWriter,
        metrics: Metrics,
        stdout: bool = True,
        json_lines: bool = False,
    ) -> None:
        self.app = app
        self.journal = journal
        self.metrics = metrics
        self.stdout = stdout
        self.json_lines = json_lines
        self._time = TimeFormatter()
        self._combined_stamp = (-1, "")  # (second, "28/Nov/2026:01:02:03 +0000")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.time()
        clock = time.perf_counter()
        request_id = user_agent = referrer = ""
        header = forwarded = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
            elif name == b"referer":
                referrer = value.decode("latin-1")
            elif name == _PROBE_HEADER:
                header = True
            elif name == b"x-forwarded-for":
                forwarded = True
        if not request_id or not valid_request_id(request_id):
            request_id = new_request_id()
        probe: str | None = None  # a platform's probe or scrape: counted, not journaled
        if scope["path"] in _PROBE_PATHS:
            client = scope.get("client")
            probe = probe_kind(
                scope["method"],
                scope["path"],
                header,
                user_agent,
                forwarded,
                client[0] if client else None,
            )
        status = 500
        sent = 0
        done = False
        extra_headers = (
            (b"x-request-id", request_id.encode()),
            _Worker.header,
            *SECURITY_HEADERS,
        )

        def finish(final_status: int | None = None) -> None:
            nonlocal done
            if done:
                return
            done = True
            duration = time.perf_counter() - clock
            code = status if final_status is None else final_status
            if probe is not None:
                self.metrics.probes.labels(probe).inc()
                self.metrics.observe(scope["path"], scope["method"], code, duration)
                return
            self._record(scope, started, duration, code, sent, request_id, user_agent, referrer)

        # A plain function that returns the server's awaitable: one coroutine less per message.
        def send_wrapper(message: Message) -> Awaitable[None]:
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
            return send(message)

        scope[FINISH_KEY] = finish
        scope[REQUEST_ID_KEY] = request_id
        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            finish()
            REQUEST_ID.reset(token)

    def _record(
        self,
        scope: Scope,
        started: float,
        duration: float,
        status: int,
        sent: int,
        request_id: str,
        user_agent: str,
        referrer: str,
    ) -> None:
        """Journal line, stdout line, metrics: the values go straight into the line, each
        value a client sets cut to MAX_VALUE_CHARS."""
        client = scope.get("client")
        # AccessRecord's values in its order; mypy checks them where the stdout line makes one.
        fields = (
            self._time(started),
            scope["method"],
            cap_value(scope["path"]),
            cap_value(scope["query_string"].decode("latin-1")),
            status,
            sent,
            round(duration * 1000, 3),
            cap_value(client[0]) if client else "",
            cap_value(user_agent),
            cap_value(referrer),
            _Worker.name,
            request_id,
        )
        try:
            self.journal.write_line(journal_line(fields))
        except OSError as exc:
            self.metrics.journal_errors.inc()
            log.error("journal write failed, request %s not recorded: %s", request_id, exc)
        if self.stdout:
            line = _combined(
                AccessRecord(*fields), scope.get("http_version", "1.1"), self._stamp(started)
            )
            if self.json_lines:
                line = access_json(line, started, request_id)
            with contextlib.suppress(OSError):  # a closed stdout must not fail the request
                os.write(1, line)
        route: Any = scope.get("route")  # the router's match; the fast lanes set ROUTE_KEY
        label = getattr(route, "path", None) or scope.get(ROUTE_KEY) or "unmatched"
        self.metrics.observe(label, fields[1], status, duration)

    def _stamp(self, epoch: float) -> str:
        """The combined format's time, formatted once a second."""
        second = int(epoch)
        cached_second, stamp = self._combined_stamp
        if second != cached_second:
            stamp = datetime.fromtimestamp(second, UTC).strftime(COMBINED_TIME)
            self._combined_stamp = (second, stamp)
        return stamp
