"""Open-loop HTTP load for drills: requests leave at scheduled instants, to loopback only.

Request n of a phase leaves at `phase start + n / rps` (an absolute deadline), so a slow
answer never delays the next request and latency includes queueing, as a user sees it.
HTTP/1.1 is spoken with h11 (already installed as uvicorn's parser) over asyncio streams,
on a small pool of keep-alive connections. Nothing is retried: retrying is the edge's job,
and a retry here would hide exactly the failures a drill exists to find.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import h11

from cloud_phoenix.drill.http import (
    USER_AGENT,
    Connection,
    ConnectionClosedError,
    Pool,
    Target,
    failure_text,
    loopback_address,
    parse_target,
)

OVERLOADED = "overloaded"


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


class _Run:
    """One open-loop run: dispatches on schedule and collects every request's result."""

    def __init__(
        self,
        target: Target,
        pool: Pool,
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
        connection: Connection | None = None
        completed = False
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self.pool.acquire(self.loop.time())
                status, headers = await connection.get(
                    self.target.prefix + path, [*self.headers, ("X-Request-ID", request_id)]
                )
            completed = True
        except (OSError, h11.ProtocolError, ConnectionClosedError) as exc:
            error = failure_text(exc)
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
    target = parse_target(base_url)
    loop = asyncio.get_running_loop()
    pool = Pool(await loopback_address(target), target.port)
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
