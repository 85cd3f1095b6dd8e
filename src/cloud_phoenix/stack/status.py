"""The running stack's status, written by the supervisor at each turn of its loop (every
0.1 s) and read by `phoenix status`: one JSON file under PHOENIX_HOME/run, replaced atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for the annotation: readers of the status need no process code
    from cloud_phoenix.proc.child import Child

STATUS_FILE = "status.json"


@dataclass
class StackStatus:
    """What `phoenix status --json` prints (workers, rate, restarts, events, children)."""

    supervisor_pid: int
    port: int
    started: str
    updated: str = ""
    workers: dict[str, Any] = field(
        default_factory=lambda: {"desired": 0, "running": 0, "pids": []}
    )
    rate_rps: float | None = None
    restarts: int = 0
    scale_events: int = 0
    longest_below_desired_s: float = 0.0
    # The last episodes of running < desired: (when it ended, how long it lasted in s).
    below_desired: list[tuple[str, float]] = field(default_factory=list)
    children: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    # CPU peaks, notifications sent and failed, failed backups (for /metrics and /ops).
    operations: dict[str, Any] = field(default_factory=dict)
    stopping: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def workers_status(desired: int, started: Mapping[int, float], now: float) -> dict[str, Any]:
    """The `workers` entry: desired and running counts, each worker's pid and uptime."""
    return {
        "desired": desired,
        "running": len(started),
        "pids": [
            {"pid": pid, "uptime_s": round(now - since, 1)}
            for pid, since in sorted(started.items())
        ],
    }


def children_status(children: Mapping[str, Child], now: float) -> dict[str, dict[str, Any]]:
    """The `children` entry: each supervised child's pid, state, restarts and uptime."""
    return {
        name: {
            "pid": child.pid,
            "running": child.running(),
            "restarts": child.restarts,
            "uptime_s": round(now - child.started_at, 1) if child.running() else 0.0,
        }
        for name, child in children.items()
    }


def write_status(run_dir: Path, status: StackStatus) -> None:
    """Replace the status file atomically: a reader never sees half of it."""
    target = run_dir / STATUS_FILE
    scratch = run_dir / f".{STATUS_FILE}.{os.getpid()}"
    scratch.write_text(json.dumps(status.to_json(), indent=1))
    os.replace(scratch, target)


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The last status written, or None when no stack has written one."""
    try:
        data = json.loads((run_dir / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def supervisor_alive(status: dict[str, Any]) -> bool:
    pid = status.get("supervisor_pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
