"""A small HTTP/1.1 client for drills: h11 over asyncio streams, loopback only.

h11 is already installed as uvicorn's parser. Connections are kept alive in a small pool;
nothing is retried (retrying is the edge's job, and a retry here would hide exactly the
failures a drill exists to find).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

# A pooled connection idle for longer is dropped, not reused: uvicorn closes idle
# keep-alive connections after 5 s, and a request sent into a closing socket would be
# reported as a platform failure although the platform did nothing wrong.
IDLE_REUSE_SECONDS = 2.0
MAX_IDLE_CONNECTIONS = 32
USER_AGENT = "phoenix-loadgen/1"


def require_loopback(url: str) -> None:
    """Raise ValueError unless the URL's host is 127.0.0.0/8, ::1 or localhost."""
    host = urlsplit(url).hostname
    if host == "localhost":
        return
    try:
        loopback = host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(
            f"{url!r} is not a loopback address: drills only send traffic to "
            "127.0.0.0/8, ::1 or localhost"
        )


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    authority: str
    prefix: str


def parse_target(base_url: str) -> Target:
    require_loopback(base_url)
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise ValueError(f"{base_url!r}: the load generator speaks plain http:// only")
    host = parts.hostname or ""
    return Target(host, parts.port or 80, parts.netloc, parts.path.rstrip("/"))


async def loopback_address(target: Target) -> str:
    """The address to connect to; `localhost` must resolve to loopback, never elsewhere."""
    if target.host != "localhost":
        return target.host
    infos = await asyncio.get_running_loop().getaddrinfo(
        target.host, target.port, type=socket.SOCK_STREAM
    )
    for *_, sockaddr in infos:
        if ipaddress.ip_address(str(sockaddr[0])).is_loopback:
            return str(sockaddr[0])
    raise ValueError(f"localhost resolves to no loopback address: {infos}")


class ConnectionClosedError(Exception):
    """The server closed the connection before a complete answer."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.http = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    async def get(self, target: str, headers: list[tuple[str, str]]) -> tuple[int, dict[str, str]]:
        """Send one GET and read its whole answer: status and lower-cased headers."""
        request = self.http.send(h11.Request(method="GET", target=target, headers=headers))
        self.writer.write((request or b"") + (self.http.send(h11.EndOfMessage()) or b""))
        await self.writer.drain()
        status, answer_headers, closed = 0, {}, False
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError:
                if closed:
                    raise ConnectionClosedError from None
                raise
            if event is h11.NEED_DATA:
                data = await self.reader.read(65536)
                closed = not data
                self.http.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                answer_headers = {
                    name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers
                }
            elif isinstance(event, h11.EndOfMessage):
                return status, answer_headers

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Keep-alive connections to one address; one request at a time on each."""

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self.idle: list[Connection] = []

    async def acquire(self, now: float) -> Connection:
        while self.idle:
            connection = self.idle.pop()
            if now - connection.idle_since < IDLE_REUSE_SECONDS and not (
                connection.reader.at_eof() or connection.writer.is_closing()
            ):
                return connection
            connection.close()
        return Connection(*await asyncio.open_connection(self.address, self.port))

    def release(self, connection: Connection, now: float) -> None:
        http = connection.http
        if (
            http.our_state is h11.DONE
            and http.their_state is h11.DONE
            and len(self.idle) < MAX_IDLE_CONNECTIONS
        ):
            http.start_next_cycle()
            connection.idle_since = now
            self.idle.append(connection)
        else:
            connection.close()

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(OSError):
                await connection.writer.wait_closed()


def failure_text(error: BaseException) -> str:
    """A short, stable name for why a request failed, for counting in a summary."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, ConnectionClosedError | BrokenPipeError):
        return "connection closed"
    if isinstance(error, h11.ProtocolError):
        return f"protocol error: {error}"
    return f"{type(error).__name__}: {error}"
