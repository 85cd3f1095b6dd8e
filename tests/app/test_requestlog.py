from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.requestlog import (
    RequestLog,
    combined_line,
    log_escape,
    new_request_id,
    valid_request_id,
    worker_id,
)
from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.journal import MAX_VALUE_CHARS, AccessRecord, JournalWriter, journal_files
from cloud_phoenix.store import LogQuery, open_store


async def two_part_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b"abc", "more_body": True})
    await send({"type": "http.response.body", "body": b"de"})


def http_scope(**headers: str) -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "query_string": b"q=1",
        "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.1.2.3", 5555),
        "http_version": "1.1",
    }


async def empty_body() -> Message:
    return {"type": "http.request", "body": b""}


async def discard(message: Message) -> None:
    return None


def serve(middleware: RequestLog, scope: Scope) -> None:
    """One request with no body through `middleware`, its answer discarded."""
    asyncio.run(middleware(scope, empty_body, discard))


def journal(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for name in journal_files(directory)
        for line in (directory / name).read_text().splitlines()
    ]


def test_the_record_is_written_before_the_last_byte_is_handed_over(tmp_path: Path) -> None:
    middleware = RequestLog(two_part_app, JournalWriter(tmp_path), Metrics(), stdout=False)
    seen_at_last_body: list[list[dict[str, object]]] = []
    started: list[Message] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            started.append(message)
        elif not message.get("more_body", False):
            seen_at_last_body.append(journal(tmp_path))

    asyncio.run(middleware(http_scope(x_request_id="rid-1", user_agent="ua"), empty_body, send))
    [records] = seen_at_last_body
    assert len(records) == 1
    assert records[0]["status"] == 201 and records[0]["bytes"] == 5
    assert records[0]["request_id"] == "rid-1" and records[0]["remote_addr"] == "10.1.2.3"
    assert len(journal(tmp_path)) == 1  # and not a second time on the way out
    headers = dict(started[0]["headers"])
    assert headers[b"x-request-id"] == b"rid-1" and b"content-security-policy" in headers


def test_an_exception_is_recorded_as_500_once(tmp_path: Path) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    middleware = RequestLog(broken, JournalWriter(tmp_path), Metrics(), stdout=False)

    with pytest.raises(RuntimeError, match="boom"):
        serve(middleware, http_scope())
    [record] = journal(tmp_path)
    assert record["status"] == 500


def test_request_id_rules() -> None:
    assert valid_request_id("a" * 128)
    assert not valid_request_id("a" * 129)
    assert not valid_request_id("")
    assert not valid_request_id("a b")
    assert not valid_request_id("é")


def test_combined_line_matches_the_node_format() -> None:
    from datetime import UTC, datetime

    record = AccessRecord(
        "2026-11-27T10:00:00.000000Z",
        "GET",
        "/logs",
        "limit=5",
        200,
        0,
        1.0,
        "127.0.0.1",
        'curl "8"',
        "",
        "h:1",
        "r",
    )
    line = combined_line(record, "1.1", datetime(2026, 11, 27, 10, tzinfo=UTC)).decode()
    assert line == (
        '127.0.0.1 - - [27/Nov/2026:10:00:00 +0000] "GET /logs?limit=5 HTTP/1.1" '
        '200 - "-" "curl \\x228\\x22"\n'
    )


def test_the_edge_health_probe_is_counted_but_not_journaled(tmp_path: Path) -> None:
    metrics = Metrics()
    middleware = RequestLog(two_part_app, JournalWriter(tmp_path), metrics, stdout=False)

    probe = {**http_scope(x_phoenix_probe="edge"), "path": "/health"}
    unix = {**http_scope(x_phoenix_probe="edge"), "path": "/health", "client": None}
    serve(middleware, unix)  # a Unix socket's peer: this host's own
    posing = {**http_scope(x_phoenix_probe="edge", x_forwarded_for="1.2.3.4"), "path": "/health"}
    serve(middleware, probe)
    serve(middleware, posing)
    assert [r["path"] for r in journal(tmp_path)] == ["/health"]  # only the client posing
    text = metrics.render().decode()
    assert 'phoenix_requests_total{method="GET",route="/health",status="201"} 2.0' in text


def test_platform_probes_and_scrapes_are_counted_but_not_journaled(tmp_path: Path) -> None:
    """6 to 17 thousand a day per instance: they would bury the requests in /logs. A client
    that poses as one (through a proxy, from outside, to another path) is journaled."""
    metrics = Metrics()
    middleware = RequestLog(two_part_app, JournalWriter(tmp_path), metrics, stdout=False)

    def request(path: str, client: str = "10.0.4.5", **headers: str) -> None:
        scope = {**http_scope(**headers), "path": path, "client": (client, 40000)}
        serve(middleware, scope)

    request("/health", user_agent="ELB-HealthChecker/2.0")
    request("/health", user_agent="kube-probe/1.29")
    request("/ready", x_phoenix_probe="kubelet")
    request("/metrics", user_agent="Prometheus/2.53.0")
    request("/metrics", user_agent="Prometheus/2.53.0", x_forwarded_for="203.0.113.9")
    request("/health", client="203.0.113.9", user_agent="kube-probe/1.29")
    request("/generatecert", user_agent="kube-probe/1.29")
    assert [(r["path"], r["remote_addr"]) for r in journal(tmp_path)] == [
        ("/metrics", "10.0.4.5"),
        ("/health", "203.0.113.9"),
        ("/generatecert", "10.0.4.5"),
    ]
    text = metrics.render().decode()
    for kind in ("elb", "kubelet", "header", "prometheus"):
        assert f'phoenix_probes_total{{kind="{kind}"}} 1.0' in text
    assert 'phoenix_requests_total{method="GET",route="/ready",status="201"} 1.0' in text


def test_made_request_ids_are_128_bits_and_differ_in_a_forked_worker() -> None:
    """gunicorn forks its workers from one process: each must make ids of its own and
    name itself by its own pid (learned at the fork, not by a system call per request)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        os.write(write_end, f"{new_request_id()} {worker_id()}".encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child_id, child_worker = os.read(read_end, 1024).decode().split()
    os.close(read_end)
    mine = new_request_id()
    assert re.fullmatch(r"[0-9a-f]{32}", mine) and re.fullmatch(r"[0-9a-f]{32}", child_id)
    assert child_id != mine
    assert child_worker.endswith(f":{pid}") and worker_id().endswith(f":{os.getpid()}")
    assert len({new_request_id() for _ in range(10_000)}) == 10_000


FORGED_PATH = (
    '/x HTTP/1.1" 200 5 "-" "-"\n6.6.6.6 - - [27/Nov/2026:10:00:00 +0000] "GET /admin/delete-all'
)


def test_a_client_cannot_forge_or_split_an_access_line() -> None:
    """Every client-set value is printed as nginx does: printable ASCII as is, `\\xHH` for
    control characters, bytes past ASCII (of the UTF-8 form), the quote and the backslash."""
    from datetime import UTC, datetime

    record = AccessRecord(
        "2026-11-27T10:00:00.000000Z",
        "GET",
        FORGED_PATH,
        "a=\x00\r",
        404,
        9,
        1.0,
        '1.2.3.4" x',
        "ua\\\r\nX\x7f",
        'é"',
        "h:1",
        "r",
    )
    line = combined_line(record, "1.1", datetime(2026, 11, 27, 10, tzinfo=UTC))
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert b"\r" not in line and b"\0" not in line and b"\x7f" not in line
    assert line.decode("ascii") == (
        '1.2.3.4\\x22 x - - [27/Nov/2026:10:00:00 +0000] "GET /x HTTP/1.1\\x22 200 5 '
        "\\x22-\\x22 \\x22-\\x22\\x0A6.6.6.6 - - [27/Nov/2026:10:00:00 +0000] \\x22GET "
        '/admin/delete-all?a=\\x00\\x0D HTTP/1.1" 404 9 "\\xC3\\xA9\\x22" '
        '"ua\\x5C\\x0D\\x0AX\\x7F"\n'
    )


ESCAPED = re.compile(r"(?:[ !#-\[\]-~]|\\x([0-9A-F]{2}))*")


@pytest.mark.parametrize(
    "block",
    [range(0, 0x800), range(0xD7F0, 0xE010), range(0xFFF0, 0x10010), range(0x10FFF0, 0x110000)],
)
def test_every_character_is_escaped_to_plain_ascii_that_gives_its_bytes_back(
    block: range,
) -> None:
    for code in block:
        value = f"a{chr(code)}\\z"
        shown = log_escape(value)
        assert ESCAPED.fullmatch(shown), repr(shown)
        back = re.sub(rb"\\x([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), shown.encode("ascii"))
        assert back == value.encode("utf-8", "surrogatepass")
    assert log_escape("/plain path?a=1") == "/plain path?a=1"


def test_the_stdout_line_of_a_forged_path_is_one_line(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    middleware = RequestLog(two_part_app, JournalWriter(tmp_path), Metrics(), stdout=True)

    scope = {**http_scope(user_agent="probe"), "path": FORGED_PATH + "\x00\r"}
    serve(middleware, scope)
    [line] = capfd.readouterr().out.splitlines(keepends=True)
    assert "/admin/delete-all\\x00\\x0D?q=1 HTTP/1.1" in line and line.endswith('"probe"\n')
    [record] = journal(tmp_path)
    assert record["path"] == FORGED_PATH + "\x00\r"  # the journal keeps the value itself


def test_a_14_kb_request_is_journaled_and_stored_with_each_value_capped(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    middleware = RequestLog(two_part_app, JournalWriter(journal_dir), Metrics(), stdout=False)

    long = {"path": "/" + "p" * 14_000, "query": "q=" + "x" * 13_998}
    agent, referrer = "U" * 14_336, "https://r.example/" + "r" * 14_000
    scope = {
        **http_scope(user_agent=agent, referer=referrer),
        "path": long["path"],
        "query_string": long["query"].encode(),
    }
    serve(middleware, scope)
    [name] = journal_files(journal_dir)
    line = (journal_dir / name).read_bytes()
    assert len(line) < 4 * (MAX_VALUE_CHARS + 64) + 400  # not the 56 KB that came in

    def capped(value: str) -> str:
        cut = len(value) - MAX_VALUE_CHARS
        return value[:MAX_VALUE_CHARS] + f"...[truncated {cut} chars]"

    expected = {
        "path": capped(long["path"]),
        "query": capped(long["query"]),
        "user_agent": capped(agent),
        "referrer": capped(referrer),
    }
    [journaled] = journal(journal_dir)
    assert {key: journaled[key] for key in expected} == expected
    assert str(journaled["user_agent"]).endswith("...[truncated 12288 chars]")

    store = open_store(f"sqlite:///{tmp_path / 'logs.sqlite3'}")
    try:
        assert Collector(store, journal_dir).collect_once() == 1
        [row] = store.query(LogQuery(limit=10))
    finally:
        store.close()
    assert {key: getattr(row.record, key) for key in expected} == expected


def test_the_access_line_in_json_is_one_object_with_the_request_id(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    middleware = RequestLog(
        two_part_app, JournalWriter(tmp_path), Metrics(), stdout=True, json_lines=True
    )

    scope = {**http_scope(user_agent='pro"be\n', x_request_id="rid-7"), "path": FORGED_PATH}
    serve(middleware, scope)
    [line] = capfd.readouterr().out.splitlines()
    access = json.loads(line)
    assert access["logger"] == "cloud_phoenix.access" and access["level"] == "info"
    assert access["request_id"] == "rid-7"
    assert access["message"].startswith("10.1.2.3 - - [")
    assert '"pro\\x22be\\x0A"' in access["message"]  # the combined line, escaped as ever
