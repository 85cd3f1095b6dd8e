"""The running stack's status: PHOENIX_HOME/run/status.json, which the supervisor replaces
every tick (0.1 s) and `phoenix status`, `phoenix deploy`, the drills, `/ops/data` and
`/metrics` read. This module alone writes and reads it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cloud_phoenix.stack.runfiles import RunFileError, read_json, replace_json
from cloud_phoenix.store.base import Event

if TYPE_CHECKING:  # only for the annotation: readers of the status need no process code
    from cloud_phoenix.proc.child import Child

STATUS_FILE = "status.json"
VERSION = 1


class StatusError(RunFileError):
    """The status file is there but unreadable: damaged, or from another version of phoenix."""


@dataclass(frozen=True, slots=True)
class WorkerState:
    pid: int
    uptime_s: float


@dataclass(frozen=True, slots=True)
class Workers:
    """How many workers the autoscaler wants, how many run, and each one's pid and uptime."""

    desired: int = 0
    running: int = 0
    pids: tuple[WorkerState, ...] = ()


@dataclass(frozen=True, slots=True)
class ChildState:
    """A supervised child (haproxy, gunicorn, collector); `pid` None before its first start."""

    pid: int | None
    running: bool
    restarts: int
    uptime_s: float


@dataclass(frozen=True, slots=True)
class Operations:
    """The supervisor's counters since the stack started, for /metrics and /ops."""

    cpu_peaks: int = 0
    cpu_in_peak: bool = False
    notifications_sent: int = 0
    notifications_failed: int = 0
    backups_failed: int = 0
    edge_dropped_logs: int = 0  # the edge's log lines dropped, over its restarts


@dataclass
class StackStatus:
    """What `phoenix status --json` prints (workers, rate, restarts, events, children)."""

    supervisor_pid: int
    port: int
    started: str
    updated: str = ""
    workers: Workers = field(default_factory=Workers)
    rate_rps: float | None = None
    restarts: int = 0
    scale_events: int = 0
    longest_below_desired_s: float = 0.0
    # The last episodes of running < desired: (when it ended, how long it lasted in s).
    below_desired: list[tuple[str, float]] = field(default_factory=list)
    children: dict[str, ChildState] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)  # the recent ones, oldest first
    operations: Operations = field(default_factory=Operations)
    stopping: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def workers_status(desired: int, started: Mapping[int, float], now: float) -> Workers:
    """The desired and running counts, each worker's pid and uptime."""
    return Workers(
        desired,
        len(started),
        tuple(WorkerState(pid, round(now - since, 1)) for pid, since in sorted(started.items())),
    )


def children_status(children: Mapping[str, Child], now: float) -> dict[str, ChildState]:
    """Each supervised child's pid, state, restarts and uptime."""
    return {
        name: ChildState(
            pid=child.pid,
            running=child.running(),
            restarts=child.restarts,
            uptime_s=round(now - child.started_at, 1) if child.running() else 0.0,
        )
        for name, child in children.items()
    }


def write_status(run_dir: Path, status: StackStatus) -> None:
    """Replace the status file atomically: a reader never sees half of it."""
    replace_json(run_dir / STATUS_FILE, VERSION, status.to_json())


def read_status(run_dir: Path) -> StackStatus | None:
    """The last status written, or None when no stack has written one (or it stopped).

    Raises StatusError when the file is there but cannot be read as a status: not JSON, a
    field missing or of the wrong type, or another version's format.
    """
    try:
        return read_json(run_dir / STATUS_FILE, StackStatus, VERSION)
    except RunFileError as exc:
        raise StatusError(str(exc)) from None


def supervisor_alive(status: StackStatus) -> bool:
    """Whether the supervisor that wrote `status` still runs (a kill -9 leaves the file)."""
    if status.supervisor_pid <= 0:
        return False
    try:
        os.kill(status.supervisor_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
