"""CPU shares of the host and of the serving processes for the /ops page, measured between
two polls of the page."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

# More processes than PHOENIX_MAX_WORKERS allows (64): the cache can never grow without bound.
PROCESS_CACHE_MAX = 64
# CPU time is counted in clock ticks (10 ms): over shorter spans than this a share is noise.
MIN_SAMPLE_S = 0.5


@dataclass
class _Sample:
    taken: float  # time.monotonic()
    value: float | None = None  # None: only the starting point of the next measure


@dataclass
class CpuSamples:
    """psutil measures CPU between two calls: the previous call's state lives here, per
    serving process, and is reused for calls closer together than MIN_SAMPLE_S (several
    open pages). Requests run in a thread pool, hence the lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    host: _Sample | None = None
    processes: dict[int, tuple[psutil.Process, _Sample]] = field(default_factory=dict)

    def host_cpu(self, now: float) -> float | None:
        if self.host is None:
            psutil.cpu_percent(interval=None)  # the first call has nothing to compare with
            self.host = _Sample(now)
        elif now - self.host.taken >= MIN_SAMPLE_S:
            self.host = _Sample(now, round(psutil.cpu_percent(interval=None), 1))
        return self.host.value

    def process_cpu(self, pids: list[int], cpus: int, now: float) -> dict[int, float | None]:
        """Each pid's CPU as a share of the host; the processes not asked about are forgotten."""
        shares: dict[int, float | None] = {}
        for pid in pids[:PROCESS_CACHE_MAX]:
            entry = self.processes.get(pid)
            try:
                # is_running() also compares the start time: a reused pid is a new process.
                if entry is None or not entry[0].is_running():
                    process = psutil.Process(pid)
                    process.cpu_percent(interval=None)
                    entry = (process, _Sample(now))
                elif now - entry[1].taken >= MIN_SAMPLE_S:
                    share = entry[0].cpu_percent(interval=None) / cpus
                    entry = (entry[0], _Sample(now, round(min(share, 100.0), 1)))
            except psutil.Error:  # gone, or not ours to look at
                self.processes.pop(pid, None)
                shares[pid] = None
                continue
            self.processes[pid] = entry
            shares[pid] = entry[1].value
        for gone in set(self.processes) - set(shares):
            del self.processes[gone]
        return shares
