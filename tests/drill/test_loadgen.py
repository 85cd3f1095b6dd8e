"""The drills' load generator against a real `phoenix serve` and tiny loopback servers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import pytest

from cloud_phoenix.drill.http import require_loopback
from cloud_phoenix.drill.loadgen import (
    OVERLOADED,
    Phase,
    Result,
    drive,
    run_load,
    run_periodic,
    schedule,
)
from cloud_phoenix.drill.stats import summarize
from tests.fixtures.server import PhoenixProcess

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def test_100_rps_for_3_s_is_on_rate_and_every_request_answers(
    phoenix_server: PhoenixProcess,
) -> None:
    started = time.monotonic()
    results = asyncio.run(run_load(phoenix_server.url, [Phase(3, 100, ("/", "/logs?limit=5"))]))
    elapsed = time.monotonic() - started

    summary = summarize(results)
    assert summary.sent == 300 and summary.ok == 300, summary.failed[:5]
    assert summary.achieved_rps == pytest.approx(100, rel=0.05)
    assert summary.per_path == {"/": 150, "/logs?limit=5": 150}
    assert summary.p50_ms is not None and summary.p50_ms < 1000
    assert {r.request_id for r in results} == {f"load-{n}" for n in range(300)}
    assert all(r.status == 200 for r in results)
    assert all(r.worker and re.fullmatch(r".+:\d+", r.worker) for r in results)
    # The last request leaves at 2.99 s: the run is as long as its schedule, not longer.
    assert results[-1].sent_at == pytest.approx(2.99, abs=0.05)
    assert elapsed < 3.5


def test_periodic_crash_kills_serve_and_later_requests_are_refused_at_once(
    phoenix_server: PhoenixProcess,
) -> None:
    started = time.monotonic()
    results = asyncio.run(run_periodic(phoenix_server.url, "/crash", 0.25, 2.0, "crash"))
    elapsed = time.monotonic() - started

    assert [r.request_id for r in results] == [f"crash-{n}" for n in range(8)]
    assert all(r.status is None for r in results)
    # `phoenix serve` is one process: the first /crash takes the whole server down.
    assert results[0].error in {"connection closed", "connection reset"}
    assert {r.error for r in results[1:]} == {"connection refused"}
    assert all(r.latency is not None and r.latency < 0.1 for r in results[1:])
    assert elapsed < 2.5  # the schedule's 2 s, no waiting for the 10 s timeout
    assert phoenix_server.process.wait(5) != 0
    assert summarize(results).sent == 0  # /crash is left out by default
    assert summarize(results, exclude_paths=()).reasons["connection refused"] == 7


def test_drive_runs_load_and_injector_on_one_clock(phoenix_server: PhoenixProcess) -> None:
    drill = drive(
        phoenix_server.url,
        [Phase(0.5, 0), Phase(1.0, 20, ("/health",))],
        ("/ready", 0.25, 1.0),
        request_id_prefix="drill",
    )
    assert [r.sent_at for r in drill.injected] == pytest.approx([0, 0.25, 0.5, 0.75], abs=0.05)
    assert drill.load[0].sent_at == pytest.approx(0.5, abs=0.05)
    assert {r.request_id for r in drill.injected} == {f"drill-inject-{n}" for n in range(4)}
    assert summarize(drill.load).ok == 20
    assert summarize(drill.injected).ok == 4


async def _serve(handler: Handler, body: Callable[[int], Awaitable[None]]) -> None:
    """Run `body(port)` while `handler` answers on a free loopback port."""

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client hung up, as clients do
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    try:
        await body(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def test_slow_answers_delay_no_request_and_excess_is_counted_as_overloaded() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; returns when the client gives up

    results: list[Result] = []

    async def body(port: int) -> None:
        results.extend(
            await run_load(
                f"http://127.0.0.1:{port}",
                [Phase(1.0, 40, ("/",))],
                timeout=0.3,
                max_in_flight=8,
            )
        )

    started = time.monotonic()
    asyncio.run(_serve(silent, body))
    elapsed = time.monotonic() - started

    assert len(results) == 40
    # Open loop: every request left on its schedule although none was ever answered.
    assert all(abs(r.sent_at - n / 40) < 0.05 for n, r in enumerate(results))
    errors = {r.error for r in results}
    assert errors == {"timeout", OVERLOADED}
    timed_out = [r.latency for r in results if r.error == "timeout"]
    assert all(latency is not None and 0.3 <= latency < 0.4 for latency in timed_out)
    assert elapsed < 1.0 + 0.3 + 0.7  # the schedule, one timeout, slack for a busy machine


def test_chunked_answers_keep_alive_reuse_and_connection_close() -> None:
    connections = 0

    async def edge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while request := await reader.readuntil(b"\r\n\r\n"):
            close = request.startswith(b"GET /close ")
            writer.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Served-By: edge/app1\r\n"
                + (b"Connection: close\r\n" if close else b"")
                + b"\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            await writer.drain()
            if close:
                return

    async def body(port: int) -> None:
        nonlocal connections
        url = f"http://localhost:{port}"
        kept = await run_load(url, [Phase(0.5, 20, ("/",))])
        assert [r.status for r in kept] == [200] * 10 and connections == 1
        assert {r.served_by for r in kept} == {"edge/app1"}
        connections = 0
        closed = await run_load(url, [Phase(0.25, 20, ("/close",))])
        assert [r.error for r in closed] == [None] * 5 and connections == 5

    asyncio.run(_serve(edge, body))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.9.9.9/", "http://localhost:1", "http://[::1]:80"]
)
def test_loopback_urls_are_accepted(url: str) -> None:
    require_loopback(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8080",
        "http://example.com/",
        "http://192.168.1.1",
        "http://[::ffff:10.0.0.1]/",
        "http://localhost.example.com/",
        "http://127.0.0.1@example.com/",
        "/relative",
    ],
)
def test_other_hosts_are_refused_before_any_traffic(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        require_loopback(url)
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(run_load(url, [Phase(1, 10, ("/",))]))


def test_https_is_refused() -> None:
    with pytest.raises(ValueError, match="http://"):
        asyncio.run(run_load("https://127.0.0.1:1", [Phase(1, 10, ("/",))]))


def test_schedule_uses_absolute_offsets_and_cycles_paths() -> None:
    planned = list(schedule([Phase(0.5, 0), Phase(0.1, 30, ("/a", "/b")), Phase(1, 0)]))
    assert [path for _, path in planned] == ["/a", "/b", "/a"]
    assert [offset for offset, _ in planned] == pytest.approx([0.5, 0.5 + 1 / 30, 0.5 + 2 / 30])
    assert len(list(schedule([Phase(3, 100, ("/",))]))) == 300
    with pytest.raises(ValueError, match="path"):
        Phase(1, 5)


def _result(
    n: int,
    path: str = "/",
    *,
    latency: float | None = -1.0,
    status: int | None = 200,
    error: str | None = None,
) -> Result:
    """Request n, sent at n / 100 s, answered in n + 1 ms unless told otherwise."""
    latency = (n + 1) / 1000 if latency == -1.0 else latency
    return Result(path, f"t-{n}", n / 100, latency, status, error)


def test_summarize_percentiles_failures_and_exclusions() -> None:
    results = [_result(n, "/" if n % 2 else "/logs?limit=5") for n in range(100)]
    results += [
        _result(100, status=500),
        _result(101, status=404),
        _result(102, status=429),
        _result(103, latency=0.002, status=None, error="connection reset"),
        _result(104, latency=None, status=None, error=OVERLOADED),
        _result(105, "/crash?x=1", latency=None, status=None, error="connection closed"),
    ]
    summary = summarize(results)

    assert summary.sent == 105 and summary.ok == 100
    assert summary.reasons == {
        "HTTP 500": 1,
        "HTTP 404": 1,
        "HTTP 429": 1,
        "connection reset": 1,
        OVERLOADED: 1,
    }
    assert summary.per_path == {"/": 55, "/logs?limit=5": 50}
    assert summary.p50_ms == pytest.approx(52)  # answered only: 1..100 ms, then 101..103
    assert summary.p99_ms == pytest.approx(102)
    # 104 sends (the overloaded one never left) 0.01 s apart over 1.03 s.
    assert summary.achieved_rps == pytest.approx(100)
    assert "105 sent, 100 ok, 5 failed" in summary.line()
    assert summarize([]).p50_ms is None and summarize([]).achieved_rps == 0
