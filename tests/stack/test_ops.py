"""The sample `/ops/data` answers, built from the status file and the backups on disk, with
no server: what a running supervisor wrote, what a dead one left, and nothing at all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cloud_phoenix.stack.ops import collect, next_backup
from cloud_phoenix.stack.status import Operations, StackStatus, Workers, WorkerState, write_status
from cloud_phoenix.store import Event

UPDATED = "2025-01-01T00:00:00.000000Z"


def status_file(run: Path, supervisor_pid: int, **fields: Any) -> None:
    """A status file as the supervisor writes it."""
    run.mkdir(parents=True, exist_ok=True)
    status = StackStatus(supervisor_pid, 8080, UPDATED, updated=UPDATED, **fields)
    write_status(run, status)


def test_a_running_stack_s_sample_comes_from_its_status(tmp_path: Path) -> None:
    status_file(
        tmp_path / "run",
        os.getpid(),  # alive: taken for a running supervisor
        workers=Workers(2, 1, (WorkerState(os.getpid(), 4.2),)),
        rate_rps=12.5,
        restarts=3,
        scale_events=1,
        operations=Operations(cpu_peaks=1, cpu_in_peak=True),
        events=[
            Event("2025-01-01T00:00:01.000000Z", "scaled_out", "2 now"),
            Event("2025-01-01T00:00:02.000000Z", "cpu_peak_started", "hot"),
        ],
    )
    data = collect(tmp_path / "run", tmp_path / "backups", "03:00", time.monotonic())
    assert (data.supervisor.running, data.supervisor.pid) == (True, os.getpid())
    assert data.supervisor.age_s is not None and data.supervisor.age_s > 0
    assert (data.rate_rps, data.restarts, data.scale_events) == (12.5, 3, 1)
    assert (data.workers.desired, data.workers.running) == (2, 1)
    assert [(p.pid, p.uptime_s) for p in data.workers.processes] == [(os.getpid(), 4.2)]
    assert [e.kind for e in data.events] == ["cpu_peak_started", "scaled_out"]  # newest first
    assert (data.cpu_peaks.count, data.cpu_peaks.active) == (1, True)
    assert data.backups.last is None and data.backups.next is not None


def test_without_a_live_supervisor_the_sample_is_this_process_alone(tmp_path: Path) -> None:
    started = time.monotonic() - 5
    alone = collect(tmp_path / "run", tmp_path / "backups", "03:00", started)
    assert not alone.supervisor.running and alone.supervisor.updated is None
    [process] = alone.workers.processes
    assert process.pid == os.getpid() and process.uptime_s is not None and process.uptime_s >= 5
    assert alone.restarts is None and alone.events == [] and alone.backups.next is None

    # The file a supervisor killed with -9 leaves behind is not a running stack.
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait(10)  # reaped: its pid names no process
    status_file(tmp_path / "run", dead.pid, restarts=3)
    left = collect(tmp_path / "run", tmp_path / "backups", "03:00", started)
    assert not left.supervisor.running and left.supervisor.updated == UPDATED
    assert left.restarts is None


def test_next_backup_is_the_next_local_clock_time_with_its_offset() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    text = next_backup("03:00", now)
    assert text is not None
    moment = datetime.fromisoformat(text)
    assert now < moment <= now + timedelta(days=1)
    assert moment.astimezone().strftime("%H:%M") == "03:00"
    assert next_backup("25:00", now) is None  # never raised into the page
    assert next_backup("off", now) is None  # PHOENIX_BACKUP_AT=off: none scheduled
