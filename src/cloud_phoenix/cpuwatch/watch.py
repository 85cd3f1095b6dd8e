"""The CPU watch's shell: sample the host and the stack's processes, evaluate, send notices.

`CpuWatch.tick()` takes one sample (a few milliseconds), feeds `cpuwatch.evaluate` and
hands its notices to the `Notifier`, which never blocks; it logs and counts its own
errors instead of raising, so the supervisor can call it from its loop or `run` it in a
thread.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, TypeVar

import psutil

from cloud_phoenix.cpuwatch.context import helper_children
from cloud_phoenix.cpuwatch.decide import (
    CpuPolicy,
    CpuSample,
    CpuState,
    ProcessCpu,
    evaluate,
    wants_endpoints,
)
from cloud_phoenix.notify.notice import Notice

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Processes outside the stack are looked at only while CPU is high: enough to name a
# stranger that ran hot without walking the whole process table every second.
OUTSIDE_TOP = 5

StackPids = Mapping[str, int] | Iterable[tuple[str, int]]


class NoticeSink(Protocol):
    """What the watch sends notices to: `notify.Notifier`, or a list's append in tests."""

    def send(self, notice: Notice) -> None: ...


def _busy_and_total() -> tuple[float, float]:
    """Busy and total CPU seconds of the host since boot."""
    fields: dict[str, float] = psutil.cpu_times()._asdict()
    # Linux counts guest time inside user time as well: do not count it twice.
    total = sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return total - idle, total


class HostCpu:
    """The host's CPU percent since the previous reading, from its own CPU-times deltas.

    psutil.cpu_percent(interval=None) keeps one module-wide previous reading, so any other
    caller in the process (a metrics collector) would shorten our interval; this does not.
    """

    def __init__(self) -> None:
        self._last = _busy_and_total()

    def read(self) -> float:
        """Percent busy since the last read; NaN when no time passed (nothing measured)."""
        busy, total = _busy_and_total()
        last_busy, last_total = self._last
        self._last = (busy, total)
        if total - last_total <= 0:
            return math.nan
        return max(0.0, min(100.0, 100.0 * (busy - last_busy) / (total - last_total)))


class ProcessTable:
    """psutil.Process objects kept between samples: their first cpu_percent() is always 0."""

    def __init__(self) -> None:
        self._known: dict[int, psutil.Process] = {}
        self._cpus = psutil.cpu_count() or 1

    def percent(self, pid: int) -> float | None:
        """The process's share of the host's CPU since the last call; None if it is gone."""
        process = self._known.get(pid)
        try:
            if process is None or not process.is_running():  # is_running: not a reused pid
                process = psutil.Process(pid)
                self._known[pid] = process
            return process.cpu_percent(interval=None) / self._cpus
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._known.pop(pid, None)
            return None

    def forget_except(self, pids: set[int]) -> None:
        for pid in set(self._known) - pids:
            del self._known[pid]


class CpuWatch:
    """Samples CPU each `policy.interval`, evaluates, and sends start and end notices.

    `stack_pids()` names the stack's processes: a mapping name -> pid, or (name, pid)
    pairs when names repeat (several "worker"). `endpoints(since_epoch)` gives the busiest
    (route, count) since then, e.g. `busiest_endpoints` on the journal; `workers()` the
    worker count. Counters for /metrics: `samples`, `peaks`, `errors`.
    """

    def __init__(
        self,
        policy: CpuPolicy,
        notifier: NoticeSink,
        stack_pids: Callable[[], StackPids],
        endpoints: Callable[[float], tuple[tuple[str, int], ...]] = lambda since: (),
        workers: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        host: str | None = None,
    ) -> None:
        self.policy = policy
        self.state = CpuState()
        self.samples = 0
        self.errors = 0
        self.last_sample: CpuSample | None = None
        self._notifier = notifier
        self._stack_pids = stack_pids
        self._endpoints = endpoints
        self._workers = workers
        self._clock = clock
        self._wall_clock = wall_clock
        self._host = socket.gethostname() if host is None else host
        self._cpu = HostCpu()
        self._stack = ProcessTable()
        self._outside = ProcessTable()
        self._outside_scanned = False

    @property
    def peaks(self) -> int:
        """Peaks started since the watch began."""
        return self.state.peaks

    @property
    def in_peak(self) -> bool:
        return self.state.in_peak

    def tick(self) -> list[Notice]:
        """Take one sample, evaluate it, send its notices; logs and counts errors, never raises."""
        try:
            sample = self.sample()
            self.state, notices = evaluate(sample, self.state, self.policy)
        except Exception:
            self.errors += 1
            log.exception("CPU watch: sampling failed; trying again next tick")
            return []
        self.samples += 1
        self.last_sample = sample
        for notice in notices:
            try:
                self._notifier.send(notice)
            except Exception:
                self.errors += 1
                log.exception("CPU watch: could not send %r", notice.title)
        return notices

    def sample(self) -> CpuSample:
        """Read the host's CPU, the stack's processes, and (when it matters) the endpoints."""
        at = self._clock()
        host_percent = self._cpu.read()
        processes = self._stack_processes()
        hot = self.state.in_peak or host_percent >= self.policy.threshold
        if hot:
            processes += self._outside_processes({p.pid for p in processes})
        self._outside_scanned = hot
        endpoints: tuple[tuple[str, int], ...] = ()
        if wants_endpoints(host_percent, self.state, self.policy):
            endpoints = self._guarded(
                "endpoints",
                lambda: self._endpoints(self._wall_clock() - self.policy.endpoint_window),
                (),
            )
        workers = self._guarded("workers", self._workers, 0)
        return CpuSample(at, host_percent, processes, endpoints, workers, self._host)

    def _guarded(self, what: str, read: Callable[[], _T], default: _T) -> _T:
        try:
            return read()
        except Exception as exc:
            self.errors += 1
            log.warning("CPU watch: could not read %s: %s", what, exc)
            return default

    def _stack_processes(self) -> tuple[ProcessCpu, ...]:
        """The stack's named processes and their helper children (a worker's key maker,
        serve's collector): the certificates' CPU belongs to the stack, not to a stranger."""
        nothing: StackPids = ()
        named = self._guarded("the stack's pids", self._stack_pids, nothing)
        pairs = list(named.items() if isinstance(named, Mapping) else named)
        pairs += self._guarded("the stack's helpers", lambda: helper_children(pairs), [])
        measured: list[ProcessCpu] = []
        for name, pid in pairs:
            percent = self._stack.percent(pid)
            if percent is not None:
                measured.append(ProcessCpu(name, pid, percent))
        self._stack.forget_except({p.pid for p in measured})
        return tuple(measured)

    def _outside_processes(self, stack: set[int]) -> tuple[ProcessCpu, ...]:
        """The busiest processes outside the stack (this process included if not in it)."""
        fresh = self._outside_scanned  # else each value averages over the time since last seen
        found: list[ProcessCpu] = []
        seen: set[int] = set()
        for process in psutil.process_iter(["name"]):
            if process.pid in stack:
                continue
            seen.add(process.pid)
            percent = self._outside.percent(process.pid)
            if percent is not None and fresh:
                name = str(process.info.get("name") or "?")
                found.append(ProcessCpu(name, process.pid, percent, stack=False))
        self._outside.forget_except(seen)
        if not fresh:
            return ()
        found.sort(key=lambda p: -p.percent)
        return tuple(found[:OUTSIDE_TOP])

    def run(self, stop: threading.Event) -> None:
        """Tick every `policy.interval` seconds until `stop` is set (for a thread).

        The first tick comes one interval after the start: a CPU reading over a few
        milliseconds is mostly rounding of the kernel's 10 ms ticks.
        """
        interval = self.policy.interval
        next_at = self._clock() + interval
        while not stop.wait(max(0.0, next_at - self._clock())):
            self.tick()
            next_at += interval
            if next_at < self._clock():  # fell behind (a suspended host): skip, do not burst
                next_at = self._clock() + interval
