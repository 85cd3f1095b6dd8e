"""Open-loop HTTP load for drills: requests leave at scheduled instants, to loopback only.

Request n of a phase leaves at `phase start + n / rps` (an absolute deadline), so a slow
answer never delays the next request and latency includes queueing, as a user sees it.
HTTP/1.1 is spoken with h11 (already installed as uvicorn's parser) over asyncio streams,
on a small pool of keep-alive connections. Nothing is retried: retrying is the edge's job,
and a retry here would hide exactly the failures a drill exists to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import socket
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import h11

# A pooled connection idle for longer is dropped, not reused: uvicorn closes idle
# keep-alive connections after 5 s, and a request sent into a closing socket would be
# reported as a platform failure although the platform did nothing wrong.
IDLE_REUSE_SECONDS = 2.0
MAX_IDLE_CONNECTIONS = 32
USER_AGENT = "phoenix-loadgen/1"
OVERLOADED = "overloaded"


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
class Phase:
    """`seconds` of `rps` requests per second, cycling through `paths`."""

    seconds: float
    rps: float
    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (self.seconds >= 0 and self.rps >= 0):
            raise ValueError(f"a phase needs seconds >= 0 and rps >= 0, got {self}")
        if self.rps > 0 and not self.paths:
            raise ValueError(f"a phase at {self.rps} req/s needs at least one path")
        if any(not path.startswith("/") for path in self.paths):
            raise ValueError(f"paths must start with '/': {self.paths}")


@dataclass(frozen=True)
class Result:
    """One scheduled request; `sent_at` is seconds since the start, `latency` seconds."""

    path: str
    request_id: str
    sent_at: float
    # From the scheduled instant to the end of the answer, or to the failure; so it includes
    # queueing. None when the request was never sent (overloaded).
    latency: float | None
    status: int | None
    error: str | None
    worker: str | None = None  # X-Phoenix-Worker: host:pid of the worker that answered
    served_by: str | None = None  # X-Served-By, when an edge names the server it used


class Injector(NamedTuple):
    """Request `path` every `interval` seconds for `seconds`, after `delay` seconds."""

    path: str
    interval: float
    seconds: float
    delay: float = 0.0


@dataclass(frozen=True)
class Drill:
    """The results of the steady load and of the injected requests, on one clock."""

    load: list[Result]
    injected: list[Result]


def schedule(phases: Sequence[Phase]) -> Iterator[tuple[float, str]]:
    """(offset from the start, path) of every request the phases ask for, in order."""
    phase_start = 0.0
    for phase in phases:
        if phase.rps > 0:
            # The epsilon keeps 3 s at 100 req/s at 300 requests despite float rounding.
            for k in range(math.ceil(phase.seconds * phase.rps - 1e-9)):
                yield phase_start + k / phase.rps, phase.paths[k % len(phase.paths)]
        phase_start += phase.seconds


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    authority: str
    prefix: str


def _target(base_url: str) -> _Target:
    require_loopback(base_url)
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        raise ValueError(f"{base_url!r}: the load generator speaks plain http:// only")
    host = parts.hostname or ""
    return _Target(host, parts.port or 80, parts.netloc, parts.path.rstrip("/"))


async def _loopback_address(target: _Target) -> str:
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


class _ConnectionClosedError(Exception):
    """The server closed the connection before a complete answer."""


class _Connection:
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
                    raise _ConnectionClosedError from None
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


class _Pool:
    """Keep-alive connections to one address; one request at a time on each."""

    def __init__(self, address: str, port: int) -> None:
        self.address, self.port = address, port
        self.idle: list[_Connection] = []

    async def acquire(self, now: float) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if now - connection.idle_since < IDLE_REUSE_SECONDS and not (
                connection.reader.at_eof() or connection.writer.is_closing()
            ):
                return connection
            connection.close()
        return _Connection(*await asyncio.open_connection(self.address, self.port))

    def release(self, connection: _Connection, now: float) -> None:
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


def _reason(error: BaseException) -> str:
    """A short, stable name for why a request failed, for counting in a summary."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, _ConnectionClosedError | BrokenPipeError):
        return "connection closed"
    if isinstance(error, h11.ProtocolError):
        return f"protocol error: {error}"
    return f"{type(error).__name__}: {error}"


class _Run:
    """One open-loop run: dispatches on schedule and collects every request's result."""

    def __init__(
        self,
        target: _Target,
        pool: _Pool,
        start: float,
        timeout: float,
        max_in_flight: int,
        prefix: str,
        extra: Mapping[str, str] | None,
    ) -> None:
        self.target, self.pool, self.start = target, pool, start
        self.timeout, self.max_in_flight, self.prefix = timeout, max_in_flight, prefix
        self.headers = [
            ("Host", target.authority),
            ("User-Agent", USER_AGENT),
            ("Connection", "keep-alive"),
            *(extra or {}).items(),
        ]
        self.loop = asyncio.get_running_loop()
        self.results: dict[int, Result] = {}
        self.in_flight: set[asyncio.Task[None]] = set()

    async def run(self, phases: Sequence[Phase]) -> list[Result]:
        try:
            for n, (offset, path) in enumerate(schedule(phases)):
                delay = self.start + offset - self.loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(self.in_flight) >= self.max_in_flight:
                    sent_at = self.loop.time() - self.start
                    self.results[n] = Result(path, self._id(n), sent_at, None, None, OVERLOADED)
                    continue
                task = asyncio.create_task(self._request(n, path, self.start + offset))
                self.in_flight.add(task)
                task.add_done_callback(self.in_flight.discard)
            # Idle phases at the end are part of the drill (the scale-in it waits for).
            await asyncio.sleep(self.start + sum(p.seconds for p in phases) - self.loop.time())
            await asyncio.gather(*self.in_flight)
        finally:
            for task in self.in_flight:
                task.cancel()
            await self.pool.close()
        return [self.results[n] for n in sorted(self.results)]

    def _id(self, n: int) -> str:
        return f"{self.prefix}-{n}"

    async def _request(self, n: int, path: str, scheduled: float) -> None:
        request_id = self._id(n)
        sent_at = self.loop.time() - self.start
        status: int | None = None
        headers: dict[str, str] = {}
        error: str | None = None
        connection: _Connection | None = None
        completed = False
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self.pool.acquire(self.loop.time())
                status, headers = await connection.get(
                    self.target.prefix + path, [*self.headers, ("X-Request-ID", request_id)]
                )
            completed = True
        except (OSError, h11.ProtocolError, _ConnectionClosedError) as exc:
            error = _reason(exc)
        finally:
            if connection is not None:
                if completed:
                    self.pool.release(connection, self.loop.time())
                else:
                    connection.close()
        self.results[n] = Result(
            path,
            request_id,
            sent_at,
            self.loop.time() - scheduled,
            status,
            error,
            headers.get("x-phoenix-worker"),
            headers.get("x-served-by"),
        )


async def _run_load(
    base_url: str,
    phases: Sequence[Phase],
    *,
    timeout: float,
    max_in_flight: int,
    request_id_prefix: str,
    extra: Mapping[str, str] | None,
    start: float | None = None,
) -> list[Result]:
    target = _target(base_url)
    loop = asyncio.get_running_loop()
    pool = _Pool(await _loopback_address(target), target.port)
    run = _Run(
        target,
        pool,
        loop.time() if start is None else start,
        timeout,
        max_in_flight,
        request_id_prefix,
        extra,
    )
    return await run.run(phases)


async def run_load(
    base_url: str,
    phases: Sequence[Phase],
    *,
    timeout: float = 10.0,
    max_in_flight: int = 256,
    request_id_prefix: str = "load",
    extra: Mapping[str, str] | None = None,
) -> list[Result]:
    """Send the phases' GET requests open-loop; `extra` adds request headers. Never retries."""
    return await _run_load(
        base_url,
        phases,
        timeout=timeout,
        max_in_flight=max_in_flight,
        request_id_prefix=request_id_prefix,
        extra=extra,
    )


def _periodic(injector: Injector) -> list[Phase]:
    if not injector.interval > 0:
        raise ValueError(f"an injector needs an interval > 0 seconds, got {injector.interval}")
    every = Phase(injector.seconds, 1.0 / injector.interval, (injector.path,))
    return [Phase(injector.delay, 0.0), every]


async def run_periodic(
    base_url: str,
    path: str,
    interval: float,
    seconds: float,
    request_id_prefix: str = "inject",
    *,
    timeout: float = 10.0,
) -> list[Result]:
    """GET `path` every `interval` seconds for `seconds` (the /crash injector)."""
    return await run_load(
        base_url,
        _periodic(Injector(path, interval, seconds)),
        timeout=timeout,
        request_id_prefix=request_id_prefix,
    )


async def run_drill(
    base_url: str,
    load_phases: Sequence[Phase],
    injector: Injector | tuple[str, float, float] | None = None,
    *,
    timeout: float = 10.0,
    max_in_flight: int = 256,
    request_id_prefix: str = "load",
    extra: Mapping[str, str] | None = None,
) -> Drill:
    """Run the load and the injector together; both `sent_at` count from the same start."""
    start = asyncio.get_running_loop().time()
    runs = [(load_phases, request_id_prefix)]
    if injector is not None:
        runs.append((_periodic(Injector(*injector)), f"{request_id_prefix}-inject"))
    results = await asyncio.gather(
        *(
            _run_load(
                base_url,
                phases,
                timeout=timeout,
                max_in_flight=max_in_flight,
                request_id_prefix=prefix,
                extra=extra,
                start=start,
            )
            for phases, prefix in runs
        )
    )
    return Drill(results[0], results[1] if len(results) > 1 else [])


def drive(
    base_url: str,
    phases: Sequence[Phase],
    injector: Injector | tuple[str, float, float] | None = None,
    *,
    timeout: float = 10.0,
    max_in_flight: int = 256,
    request_id_prefix: str = "load",
    extra: Mapping[str, str] | None = None,
) -> Drill:
    """`run_drill` on an event loop in the current thread, for the CLI."""
    return asyncio.run(
        run_drill(
            base_url,
            phases,
            injector,
            timeout=timeout,
            max_in_flight=max_in_flight,
            request_id_prefix=request_id_prefix,
            extra=extra,
        )
    )


@dataclass(frozen=True)
class Failure:
    """A request that got no answer, or an answer of 400 or more."""

    path: str
    request_id: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What a run amounted to: latencies of answered requests in ms, rate of the sends."""

    sent: int
    ok: int
    failed: tuple[Failure, ...]
    p50_ms: float | None
    p99_ms: float | None
    achieved_rps: float
    per_path: dict[str, int]
    reasons: dict[str, int]

    def line(self) -> str:
        """One line for a terminal or a log."""
        p50 = "-" if self.p50_ms is None else f"{self.p50_ms:.1f}"
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.1f}"
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.reasons.items()))
        return (
            f"{self.sent} sent, {self.ok} ok, {len(self.failed)} failed"
            f"{f' ({reasons})' if reasons else ''}, p50 {p50} ms, p99 {p99} ms, "
            f"{self.achieved_rps:.1f} req/s"
        )


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with p % of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def failure_reason(result: Result) -> str | None:
    """Why a result counts as failed, or None when it succeeded.

    Every status of 400 or more fails, 429 included: the drills send only valid requests,
    so a 4xx is a bug, and a 429 means a user was turned away, which the platform exists
    to prevent.
    """
    if result.error is not None:
        return result.error
    if result.status is None or result.status >= 400:
        return f"HTTP {result.status}"
    return None


def summarize(results: Sequence[Result], exclude_paths: Sequence[str] = ("/crash",)) -> Summary:
    """Count, time and classify results, leaving out `exclude_paths` (with any query)."""
    kept = [
        r
        for r in results
        if r.path not in exclude_paths and r.path.partition("?")[0] not in exclude_paths
    ]
    failed = tuple(
        Failure(r.path, r.request_id, reason)
        for r in kept
        if (reason := failure_reason(r)) is not None
    )
    # Percentiles of answered requests: a refused connection is not a fast answer, and
    # failures are counted on their own.
    latencies = [r.latency * 1000 for r in kept if r.latency is not None and r.status is not None]
    sends = sorted(r.sent_at for r in kept if r.error != OVERLOADED)
    span = sends[-1] - sends[0] if sends else 0.0
    # n sends evenly spaced over a span are n - 1 intervals: the rate is (n - 1) / span.
    rate = (len(sends) - 1) / span if span > 0 else 0.0
    return Summary(
        sent=len(kept),
        ok=len(kept) - len(failed),
        failed=failed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        achieved_rps=rate,
        per_path=dict(Counter(r.path for r in kept)),
        reasons=dict(Counter(f.reason for f in failed)),
    )
