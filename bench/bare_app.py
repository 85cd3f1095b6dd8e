"""The ceiling for `GET /`: a bare ASGI app answering a fixed HTML page, served like Phoenix.

Run as `python bench/bare_app.py` with PORT, PHOENIX_HOST and BARE_PAGE_BYTES (the size of
the page to answer, e.g. the size of Phoenix's catalogue), or have `phoenix up` serve it with
PHOENIX_WORKER_APP=bare_app:application() and bench/ on PYTHONPATH. The uvicorn options mirror
`phoenix serve` (cloud_phoenix.cli.serve): one process, uvloop, httptools, no access log, a
socket bound by us and handed over as a socket object (`Server.run(sockets=[sock])`). Not
`fd=`: uvicorn wraps an fd as AF_UNIX, TCP_NODELAY is then never set on accepted connections,
and every keep-alive response (headers and body are two writes) waits ~40 ms for the client's
delayed ACK.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import uvicorn

FILLER = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n"


def page(size: int) -> bytes:
    """An HTML document of exactly `size` bytes (at least the bare skeleton)."""
    head = "<!doctype html>\n<html><head><title>bare</title></head><body>\n"
    tail = "</body></html>\n"
    room = max(0, size - len(head) - len(tail))
    body = (FILLER * (room // len(FILLER) + 1))[:room]
    return (head + body + tail).encode()


class BareApp:
    """Answers every HTTP request with the same page; accepts the lifespan protocol."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
        ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def page_bytes() -> int:
    return int(os.environ.get("BARE_PAGE_BYTES", "10000"))


def application() -> BareApp:
    """The factory gunicorn's workers call (`bare_app:application()`): BARE_PAGE_BYTES read once."""
    return BareApp(page(page_bytes()))


def main() -> None:
    host = os.environ.get("PHOENIX_HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8081"))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        application(),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=10,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
