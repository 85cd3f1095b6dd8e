"""The status file: what the supervisor writes is what every reader gets back, typed; a file
this version cannot read is a clear error that names the file and the field."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cloud_phoenix.stack.status import (
    STATUS_FILE,
    ChildState,
    Operations,
    StackStatus,
    StatusError,
    Workers,
    WorkerState,
    read_status,
    supervisor_alive,
    workers_status,
    write_status,
)
from cloud_phoenix.stack.status_view import render_status
from cloud_phoenix.store import Event


def a_status() -> StackStatus:
    return StackStatus(
        supervisor_pid=os.getpid(),
        port=8080,
        started="2026-03-01T10:00:00.000000Z",
        updated="2026-03-01T10:05:00.100000Z",
        workers=Workers(3, 2, (WorkerState(101, 12.5), WorkerState(102, 0.3))),
        rate_rps=41.5,
        restarts=4,
        scale_events=2,
        longest_below_desired_s=0.42,
        below_desired=[("2026-03-01T10:01:00.000000Z", 0.42)],
        children={
            "haproxy": ChildState(pid=90, running=True, restarts=0, uptime_s=300.1),
            "collector": ChildState(pid=None, running=False, restarts=1, uptime_s=0.0),
        },
        events=[Event("2026-03-01T10:01:00.000000Z", "scaled_out", "to 3", {"desired": 3})],
        operations=Operations(cpu_peaks=1, notifications_sent=2, backups_failed=1),
        stopping=False,
    )


def write_raw(run_dir: Path, data: object) -> None:
    (run_dir / STATUS_FILE).write_text(json.dumps(data))


def test_what_is_written_is_read_back_typed(tmp_path: Path) -> None:
    status = a_status()
    write_status(tmp_path, status)
    assert read_status(tmp_path) == status
    assert json.loads((tmp_path / STATUS_FILE).read_text())["version"] == 1
    assert not [p.name for p in tmp_path.iterdir() if p.name != STATUS_FILE]  # no scratch left


def test_no_file_is_no_stack(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None


def test_a_file_from_before_versions_is_read(tmp_path: Path) -> None:
    """A stack started before the format had a version (its supervisor is not replaced by a
    deploy) is still seen by the commands of the new version."""
    write_raw(
        tmp_path,
        {
            "supervisor_pid": 4242,
            "port": 8080,
            "started": "2026-03-01T10:00:00.000000Z",
            "updated": "2026-03-01T10:00:01.000000Z",
            "workers": {"desired": 1, "running": 1, "pids": [{"pid": 7, "uptime_s": 1.0}]},
            "rate_rps": None,
            "restarts": 0,
            "scale_events": 0,
            "longest_below_desired_s": 0.0,
            "below_desired": [["2026-03-01T10:00:01.000000Z", 0.1]],
            "children": {"gunicorn": {"pid": 5, "running": True, "restarts": 0, "uptime_s": 1}},
            "events": [{"time": "t", "kind": "stack_started", "message": "m", "data": {}}],
            "operations": {"cpu_peaks": 0, "cpu_in_peak": False, "notifications_sent": 0},
            "stopping": False,
            "a_field_of_a_later_version": [1, 2],
        },
    )
    status = read_status(tmp_path)
    assert status is not None
    assert status.workers.pids == (WorkerState(7, 1.0),)
    assert status.children["gunicorn"].uptime_s == 1.0
    assert status.below_desired == [("2026-03-01T10:00:01.000000Z", 0.1)]
    assert status.events[0].kind == "stack_started"
    assert status.operations.notifications_failed == 0  # absent: its default


def test_another_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    write_raw(tmp_path, {"version": 2, "supervisor_pid": 1, "port": 1, "started": ""})
    with pytest.raises(StatusError) as refused:
        read_status(tmp_path)
    message = str(refused.value)
    assert str(tmp_path / STATUS_FILE) in message
    assert "format version 2; this phoenix reads version 1" in message
    assert "same version of phoenix" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        (b"[1, 2]", "holds no JSON object"),
        (b'{"supervisor_pid": 1, "port": 1, "started": "", "rate_rps": NaN}', "NaN"),
        (b'{"port": 1, "started": ""}', "supervisor_pid: Field required"),
        (b'{"supervisor_pid": "1", "port": 1, "started": ""}', "supervisor_pid: Input should"),
        (b'{"supervisor_pid": 1.5, "port": 1, "started": ""}', "supervisor_pid: Input should"),
        (b'{"supervisor_pid": true, "port": 1, "started": ""}', "supervisor_pid: Input should"),
        (
            b'{"supervisor_pid": 1, "port": 1, "started": "", "workers": {"pids": [{"pid": 1}]}}',
            "workers.pids[0].uptime_s: Field required",
        ),
        (
            b'{"supervisor_pid": 1, "port": 1, "started": "", "events": [{"kind": "k"}]}',
            "events[0].time: Field required",
        ),
        (
            b'{"supervisor_pid": 1, "port": 1, "started": "", "version": "1"}',
            "format version '1'",
        ),
    ],
)
def test_a_file_it_cannot_read_is_a_clear_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    (tmp_path / STATUS_FILE).write_bytes(content)
    with pytest.raises(StatusError, match=r"status\.json") as refused:
        read_status(tmp_path)
    assert expected in str(refused.value)


def test_a_crafted_key_is_quoted_in_the_error(tmp_path: Path) -> None:
    """What the file holds reaches a terminal only quoted: no escape sequence gets through."""
    crafted = "\x1b]0;owned\x07" + "x" * 200
    bad = {"pid": "one", "running": True, "restarts": 0, "uptime_s": 0}
    write_raw(tmp_path, {"supervisor_pid": 1, "port": 1, "started": "", "children": {crafted: bad}})
    with pytest.raises(StatusError) as refused:
        read_status(tmp_path)
    message = str(refused.value)
    assert "children[" in message and "].pid: Input should be a valid integer" in message
    assert "\x1b" not in message and "\x07" not in message
    assert len(message) < len(str(tmp_path)) + 150  # the key is cut short


def test_a_supervisor_is_alive_while_its_process_runs() -> None:
    status = a_status()
    assert supervisor_alive(status)
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    status.supervisor_pid = done.pid
    assert not supervisor_alive(status)
    status.supervisor_pid = 0  # kill(0) would signal this process group: never "alive"
    assert not supervisor_alive(status)


def test_workers_status_lists_each_worker_with_its_uptime() -> None:
    assert workers_status(2, {12: 90.0, 11: 99.5}, now=100.0) == Workers(
        2, 2, (WorkerState(11, 0.5), WorkerState(12, 10.0))
    )


def test_the_view_shows_names_and_messages_as_text() -> None:
    status = a_status()
    status.events.append(Event("2026-03-01T10:02:00.000000Z", "deploy_failed", "[bold]x[/] y"))
    out = io.StringIO()
    render_status(status, Console(file=out, width=200, color_system=None))
    shown = out.getvalue()
    assert "on port 8080" in shown and "workers 2 running / 3 desired" in shown
    assert "collector (down)" in shown and "haproxy" in shown
    assert "[bold]x[/] y" in shown
