"""gunicorn hooks for `phoenix up` (loaded with `-c python:cloud_phoenix.platform.gunicorn_conf`).

Everything else is passed on gunicorn's command line by the supervisor.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from cloud_phoenix.childproc import die_with_parent


def post_fork(server: Any, worker: Any) -> None:
    """A worker must not outlive its master: after a kill -9 of the master, the kernel tells
    each worker with SIGTERM, and it finishes its requests and exits (the new master's
    workers take over the same socket)."""
    die_with_parent(signal.SIGTERM)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multi-process metrics (its counters stay)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
