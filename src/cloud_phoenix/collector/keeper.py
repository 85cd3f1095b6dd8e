"""The collector as a child process: its command line (`phoenix collect`, which the
supervisor of `phoenix up` runs too) and, for `phoenix serve`, a thread of the server that
keeps it alive (`CollectorChild`, which the stack plugs into the application's lifespan).

Not a thread of the server: the collector parses every journal line in Python, and inside
the serving process that work holds the interpreter lock the requests need. At saturation
a collector thread took a large share of `GET /`'s rate, a collector process on another
core almost nothing (docs/DESIGN-NOTES.md#the-collector-as-a-child-process). The child is the
`phoenix collect` command with the server's own settings; the kernel stops it when the
server dies, even by kill -9 or `/crash` (PR_SET_PDEATHSIG), and SIGTERM makes it commit
what it has read before it exits, even while it is still starting (it holds the stop until
its handler is in place). Should no child make that last pass (none was running at the
stop, or it did not exit 0), the server makes it. The child is restarted with backoff if it
dies on its own, and runs at idle CPU priority (SCHED_IDLE): requests first, the backlog
when there is time; a collector that falls behind by more than PHOENIX_READY_MAX_LAG turns
/ready to 503, which sheds load to other instances until it has caught up.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.config import Settings
from cloud_phoenix.proc.background import make_idle
from cloud_phoenix.proc.child import Child, ChildSpec
from cloud_phoenix.store import StoreError, open_store

log = logging.getLogger(__name__)


def collector_spec(
    env: dict[str, str], log_path: Path | None, own_session: bool = False
) -> ChildSpec:
    """`phoenix collect`: the supervisor's child (its own log file) or serve's (stderr).
    A stop while it starts waits for its handler, so its last pass always runs."""
    argv = [sys.executable, "-m", "cloud_phoenix", "collect"]
    return ChildSpec(
        "collector", argv, env, log_path=log_path, own_session=own_session, holds_stops=True
    )


def collector_env(settings: Settings) -> dict[str, str]:
    """The server's environment with the settings the collector reads set to the server's
    (the server may have been built from settings that are not in its environment). The
    URL replaces a DB_CONNECTION_STRING_FILE: both set would be refused."""
    inherited = {k: v for k, v in os.environ.items() if k != "DB_CONNECTION_STRING_FILE"}
    return {
        **inherited,
        "PHOENIX_HOME": str(settings.home),
        "DB_CONNECTION_STRING": settings.db_url,
        "PHOENIX_COLLECT_BATCH": str(settings.collect_batch),
        "PHOENIX_COLLECT_INTERVAL": repr(settings.collect_interval),
        "PHOENIX_LOG_LEVEL": settings.log_level,
    }


class CollectorChild:
    """Runs `phoenix collect` as a child and restarts it when it exits; `stop()` ends it.
    As a context manager: started on entry, stopped (with its last pass) on exit."""

    def __init__(self, settings: Settings, grace: float = 15.0) -> None:
        self.settings = settings
        self.child = Child(collector_spec(collector_env(settings), None, own_session=True))
        self.grace = grace  # how long a stopping collector may take to commit what it read
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no start after stop() has begun
        self._thread: threading.Thread | None = None

    def __enter__(self) -> CollectorChild:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # The thread that starts the child is its parent for PR_SET_PDEATHSIG: this one
        # lives until stop(), so the child dies with the server, not with a passing thread.
        self._thread = threading.Thread(target=self._keep, name="collector-keeper", daemon=True)
        self._thread.start()

    def _keep(self) -> None:
        while True:
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self.child.start(time.monotonic())
                except OSError as exc:
                    log.error("cannot start the collector: %s", exc)
                else:
                    _idle_priority(self.child.pid)
            process = self.child.process
            if process is not None:
                process.wait()
            code = self.child.reap(time.monotonic())
            if self._stopping.is_set():
                return
            delay = max(0.5, self.child.next_start - time.monotonic())
            log.error(
                "collector exited with %s; restarting it in %.1f s (the journal keeps "
                "every record meanwhile)",
                code,
                delay,
            )
            if self._stopping.wait(delay):
                return

    def stop(self) -> int | None:
        """SIGTERM, wait up to the grace for its last pass, then SIGKILL; its exit code (None:
        none was running). Without a child's last pass, the server makes it."""
        self._stopping.set()
        with self._lock:  # the keeper starts no collector from now on
            process = self.child.process  # held here: the keeper may reap it meanwhile
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(self.grace)
            except subprocess.TimeoutExpired:
                log.warning("collector did not stop within %.0f s: killing it", self.grace)
                process.kill()
                code = process.wait(5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if code != 0:
            why = "was not running" if code is None else f"exited with {code}"
            log.warning("collector %s at the stop: collecting what it left here", why)
            last_pass(self.settings)
        return code


def last_pass(settings: Settings) -> int:
    """Collect in this process what the journal holds beyond the store's positions, bounded
    in time like a collector's own last pass (Collector.flush); how many records it stored.
    The parent of a collector child makes it once the child is stopped, for whatever the
    child could not collect."""
    try:
        store = open_store(settings.db_url)
    except StoreError as exc:
        log.warning("no last pass of the collector, the journal keeps the rest: %s", exc)
        return 0
    collector = Collector(store, settings.journal_dir, settings.collect_batch)
    try:
        collector.flush()
    finally:
        store.close()
    if collector.stats.records:
        log.info("last pass of the collector: %d records stored", collector.stats.records)
    return collector.stats.records


def _idle_priority(pid: int | None) -> None:
    """Idle priority (proc.background.make_idle): the collector takes only the CPU time the
    requests leave over; at saturation the journal holds the backlog until a quieter second.
    At normal priority the kernel often ran it on the server's core, and at SCHED_IDLE
    without its autogroup lowered it still competed with the server's session at full weight
    (measured: docs/DESIGN-NOTES.md#the-collector-as-a-child-process)."""
    if pid is None:
        return
    for problem in make_idle(pid):  # a sandbox may refuse it: the collector runs all the same
        log.warning("collector (pid %d) keeps part of its CPU priority: %s", pid, problem)
