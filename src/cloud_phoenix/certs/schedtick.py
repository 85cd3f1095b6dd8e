"""A scheduling tick of our own while idle-priority work fills every CPU; off unless asked.

Why: with every CPU busy generating keys at idle priority, a normal task that is preempted
while it runs (by a client it woke, by a kernel thread) has run ahead of its fair share, and
the kernel's EEVDF scheduler may then pick the idle-priority key thread over it. Nothing
looks again until the next scheduler tick: a whole tick (4 ms at HZ=250) on a kernel without
preemption. `perf sched` traces show requests waiting that way, whatever the key threads'
priority (docs/DESIGN-NOTES.md#the-key-makers-scheduling-tick).

What: while work is marked busy, one thread per CPU, pinned to it at the lowest real-time
priority (SCHED_FIFO 1), wakes every `period` and sleeps again at once. A real-time wake-up
preempts the key thread; when the tick thread sleeps, the kernel picks again, and the
waiting normal task (eligible again by then) runs. The wait is bounded by `period` instead
of the kernel's tick. Idle, the threads block on an event and cost nothing; busy, they cost
key generation a little, more the shorter the period. What it buys and costs, and when to
turn it on (PHOENIX_CERT_TICK_MS), is measured in docs/DESIGN-NOTES.md.

One tick per CPU is enough for the whole host: several key makers (one per worker) would
otherwise multiply the wake-ups. A tick thread ticks only while it holds its CPU's claim, an
abstract unix socket name (`\\0cloud-phoenix/tick/cpu<N>`, gone with its process, no file
to clean up; one per network namespace, so containers with their own each tick); a tick
thread that finds the name taken looks again every CLAIM_RETRY.

Real-time priority needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least 1; without either the
tick is reported once and left off (the key threads still run at idle priority).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TICK_PRIORITY = 1  # the lowest real-time priority: above every normal task, below any RT one
CLAIM_RETRY = 0.1  # seconds between looks at a CPU's claim held by another process
CLAIM_PREFIX = "\0cloud-phoenix/tick/cpu"


def claim_cpu(cpu: int) -> socket.socket | None:
    """This CPU's host-wide tick claim, or None if another process holds it."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        claim.bind(f"{CLAIM_PREFIX}{cpu}")
    except OSError:  # EADDRINUSE: another process ticks this CPU
        claim.close()
        return None
    return claim


class SchedulingTick:
    """Tick threads for `cpus`, active while at least one `busy()` block runs."""

    def __init__(self, period: float, cpus: list[int], report: Callable[[str], None]) -> None:
        self.period = period
        self.cpus = cpus
        self._report = report
        self._busy = 0
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._refused = threading.Event()  # reported once, not once per CPU

    def start(self) -> None:
        for cpu in self.cpus:
            name = f"tick-cpu{cpu}"
            threading.Thread(target=self._run, args=(cpu,), name=name, daemon=True).start()

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            self._busy += 1
            self._wanted.set()
        try:
            yield
        finally:
            with self._lock:
                self._busy -= 1
                if not self._busy:
                    self._wanted.clear()

    def _run(self, cpu: int) -> None:
        try:
            os.sched_setaffinity(0, {cpu})  # 0: this thread
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(TICK_PRIORITY))
        except OSError as exc:
            if not self._refused.is_set():
                self._refused.set()
                self._report(
                    f"no scheduling tick of its own ({exc}; needs CAP_SYS_NICE or "
                    "RLIMIT_RTPRIO >= 1): a request may wait up to a kernel tick behind "
                    "key generation"
                )
            return
        while True:
            self._wanted.wait()
            claim = claim_cpu(cpu)
            if claim is None:
                time.sleep(CLAIM_RETRY)
                continue
            with claim:
                while self._wanted.is_set():
                    time.sleep(self.period)


def ticking_cpus(threads: int) -> list[int]:
    """The CPUs to tick for `threads` busy threads: all this process may run on, if the
    threads can fill them all; none if a CPU is always left free of them (a woken task goes
    there instead of waiting)."""
    cpus = sorted(os.sched_getaffinity(0))
    return cpus if threads >= len(cpus) else []
