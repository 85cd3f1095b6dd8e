"""The supervisor shell's own pieces, without starting the stack: the self-pipe that wakes
its loop when a signal is enqueued, and how it finds a gunicorn master's workers."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud_phoenix.config import Settings
from cloud_phoenix.stack.supervisor import Supervisor, worker_pids
from tests.fixtures.waiting import eventually


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_wakes_the_loop_at_once_and_stops_the_stack(
    tmp_path: Path, signum: int
) -> None:
    supervisor = Supervisor(Settings.from_env({"PHOENIX_HOME": str(tmp_path)}))
    supervisor._enqueue(signum, None)  # what the handler does: enqueue, nothing more
    assert not supervisor.stopping
    began = time.monotonic()
    supervisor._wait(10)  # the loop's wait ends on the pipe, not after its timeout
    assert time.monotonic() - began < 1
    supervisor._dispatch_signals()
    assert supervisor.stopping and not supervisor.signals


def test_the_workers_of_a_master_are_its_children_and_none_once_it_is_gone() -> None:
    # A stand-in master: a process with one child, as a gunicorn master has its workers.
    master = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; subprocess.run('cat')"], stdin=subprocess.PIPE
    )
    try:
        [worker] = eventually(lambda: worker_pids(master.pid), 10, what="the master's child")
        assert worker != master.pid
    finally:
        assert master.stdin is not None
        master.stdin.close()  # the child (cat) reads its end and exits, then the master
        master.wait(10)
    assert worker_pids(master.pid) == []  # gone: no such process
    assert worker_pids(None) == []  # no master yet
