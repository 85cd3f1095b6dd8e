"""`phoenix up` as a container runs it (PHOENIX_LOG_TO=stdout, PHOENIX_LOG_FORMAT=json): every
part of the stack logs to the stack's own output, where `kubectl logs` and CloudWatch read
it, and every line there is one JSON object, whatever a client sent."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

HOSTILE_PATH = '/a%22b%5c%0a%7B%22level%22:1%7D?x="y'


def test_every_part_logs_json_lines_to_the_stacks_own_output(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_stack(
        home,
        PHOENIX_LOG_TO="stdout",
        PHOENIX_LOG_FORMAT="json",
        PHOENIX_ACCESS_LOG="true",
        PHOENIX_MIN_WORKERS="2",
    ) as stack:
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            root = client.get("/", headers={"X-Request-ID": "rid-root"})
            assert root.status_code == 200, (root.text, stack.log_tail())
            assert client.get(HOSTILE_PATH).status_code == 404
        # A connection of its own: the worker may die with it, which is what /crash is for.
        with (
            httpx.Client(base_url=stack.url, timeout=10) as client,
            contextlib.suppress(httpx.RemoteProtocolError),
        ):
            client.get("/crash", headers={"X-Request-ID": "rid-crash"})

        def crash_logged() -> bool:
            return "rid-crash" in stack.output.read_text()

        eventually(crash_logged, 15, what="the /crash lines in the stack's output")
        assert stack.stop(timeout=40) == 0
        text = stack.output.read_bytes().decode()

    assert list((home / "logs").glob("*.log")) == []  # nothing left in files
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert all(isinstance(line, dict) for line in lines)
    for line in lines:
        assert {"time", "level", "logger", "message", "pid"} <= set(line), line
    loggers = {line["logger"] for line in lines}
    # The supervisor, gunicorn, the workers' application and access lines, the collector
    # (its start line), HAProxy (its access lines and its own notices at the stop).
    assert {
        "cloud_phoenix.stack.supervisor",
        "gunicorn.error",
        "cloud_phoenix.access",
        "cloud_phoenix.cli.serve",
        "haproxy",
    } <= loggers, loggers
    by_request: dict[object, list[dict[str, object]]] = {}
    for line in lines:
        by_request.setdefault(line.get("request_id"), []).append(line)
    root_lines = {line["logger"] for line in by_request["rid-root"]}
    assert {"cloud_phoenix.access", "haproxy"} <= root_lines
    crash_lines = {line["logger"] for line in by_request["rid-crash"]}
    # The application's own warning, logged while it answered, carries the request's id.
    assert {"cloud_phoenix.app.routes", "cloud_phoenix.access", "haproxy"} <= crash_lines
    access = [line for line in lines if line["logger"] == "cloud_phoenix.access"]
    hostile = [line for line in access if "/a" in line["message"]]
    assert hostile and all("\n" not in line["message"] for line in hostile)
