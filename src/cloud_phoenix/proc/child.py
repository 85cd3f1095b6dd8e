"""The supervisor's children: how each is started, stopped and restarted with backoff."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from cloud_phoenix.proc.background import die_with_parent, stops_held
from cloud_phoenix.proc.backoff import RESTART

log = logging.getLogger(__name__)

HEALTHY_AFTER = 60.0  # seconds up after which a child's restart backoff starts again


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What to run. `stop_signal` asks for a graceful stop; SIGKILL follows after the grace."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    pass_fds: tuple[int, ...] = ()
    stop_signal: int = signal.SIGTERM
    death_signal: int = signal.SIGTERM
    log_path: Path | None = None  # stdout and stderr, appended; None: the supervisor's own
    # Its own session (and so its own autogroup, for a background child at idle priority).
    # Every child has a process group of its own anyway: a Ctrl-C in the terminal reaches
    # only the supervisor, which stops its children in order (HAProxy and gunicorn would
    # take a terminal's SIGINT as a hard stop and cut requests in flight).
    own_session: bool = False
    # Starts with SIGTERM and SIGINT blocked, for a command that unblocks them once its
    # handlers are in place (proc.background.release_stops): a stop during its start is held, not
    # fatal. Only for such a command: any other would never see a stop.
    holds_stops: bool = False


@dataclass
class Child:
    """A supervised process and its restart bookkeeping."""

    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    failures: int = 0  # consecutive exits without a healthy minute in between
    next_start: float = 0.0
    exit_codes: list[int] = field(default_factory=list)

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, now: float) -> None:
        death_signal = self.spec.death_signal
        output = open(self.spec.log_path, "ab") if self.spec.log_path else None  # noqa: SIM115
        try:
            with stops_held() if self.spec.holds_stops else nullcontext():
                self.process = subprocess.Popen(
                    list(self.spec.argv),
                    env=dict(self.spec.env),
                    pass_fds=self.spec.pass_fds,
                    # Runs in the child before exec: the kernel sends `death_signal` when the
                    # supervisor dies, so no child outlives it holding a port (even after a
                    # kill -9). Safe with the store's pool threads: the function takes no
                    # lock, it only makes one system call through a libc handle resolved at
                    # import.
                    preexec_fn=lambda: die_with_parent(death_signal),  # noqa: PLW1509
                    stdin=subprocess.DEVNULL,
                    start_new_session=self.spec.own_session,
                    process_group=None if self.spec.own_session else 0,
                    stdout=output,
                    stderr=subprocess.STDOUT if output else None,
                )
        finally:
            if output is not None:
                output.close()  # the child has its own copy
        self.started_at = now
        self.starts += 1
        log.info("%s started (pid %d)", self.spec.name, self.process.pid)

    def reap(self, now: float) -> int | None:
        """If the process has exited: note it, plan the restart, return its exit code."""
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            return None
        self.process = None
        self.exit_codes = [*self.exit_codes[-9:], code]
        if now - self.started_at >= HEALTHY_AFTER:
            self.failures = 0
        self.next_start = now + RESTART.delay(self.failures)
        self.failures += 1
        return code

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def stop(self, grace: float) -> int | None:
        """Ask for a graceful stop, wait up to `grace` seconds, then kill."""
        if self.process is None:
            return None
        self.signal(self.spec.stop_signal)
        try:
            return self.process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s: killing it", self.spec.name, grace)
            self.process.kill()
            return self.process.wait(5)
