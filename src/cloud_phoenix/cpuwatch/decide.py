"""The CPU watch's decision: when a CPU peak starts and ends, and what its notices say.

A sample taken at time `at` holds the host's CPU averaged since the previous sample (what
a delta of CPU times gives), so it *covers* the interval from the previous sample to `at`.

- A sample is **high** when its host CPU is at or over `threshold`, **low** when under it.
- A **high run** is consecutive high samples; it covers from the previous sample's time
  (when that sample was valid and no more than `max_gap` earlier; otherwise from the run's
  own first sample: time that was not observed is not counted).
- A **peak starts** at the first sample whose high run covers `peak_seconds` or more: with
  1 s samples and 2 s, the 2nd high sample in a row (CPU has been high for 2 s then); the
  start notice goes out with that very sample.
- A **peak ends** at the first sample whose low run covers `clear_seconds` (default
  `peak_seconds`): a dip shorter than that inside a peak does not end it, so a CPU that
  flaps around the threshold gives one start and one end notice per peak, not a storm.
- A gap longer than `max_gap`, or a sample whose CPU is not a number, restarts the run in
  progress (a peak already started stays on).

Pure: the shell (`cpuwatch.watch`) reads the world, calls `evaluate`, and sends what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

TOP_PROCESSES = 5
# Times this close count as equal: the clock's jitter must not push a start one sample later.
TIME_SLACK = 1e-3

NoticeKind = Literal["cpu_peak_started", "cpu_peak_ended", "backup_failed"]


@dataclass(frozen=True, slots=True)
class CpuPolicy:
    """Threshold (percent of the host's CPU) and the durations that make and end a peak."""

    threshold: float = 80.0
    peak_seconds: float = 2.0
    clear_seconds: float | None = None  # None: the same as peak_seconds
    interval: float = 1.0  # seconds between samples, as the shell takes them
    max_gap: float | None = None  # None: 5 intervals
    endpoint_window: float = 10.0  # seconds of requests a start notice counts

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0 < self.threshold <= 100):
            raise ValueError(f"threshold must be above 0 and at most 100 %, got {self.threshold}")
        for name in ("peak_seconds", "clear_seconds", "max_gap"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be 0 or more seconds, got {value}")
        for name in ("interval", "endpoint_window"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value}")

    @property
    def clear(self) -> float:
        """Seconds CPU must stay under the threshold before a peak ends."""
        return self.peak_seconds if self.clear_seconds is None else self.clear_seconds

    @property
    def gap(self) -> float:
        """The longest time between two samples that still counts as watched."""
        return 5 * self.interval if self.max_gap is None else self.max_gap


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    """One process's CPU over the last sample, in percent of the whole host's CPU."""

    name: str
    pid: int
    percent: float
    stack: bool = True  # False: a process of the host outside the stack


@dataclass(frozen=True, slots=True)
class CpuSample:
    """What the shell saw at monotonic time `at`."""

    at: float
    host_percent: float
    processes: tuple[ProcessCpu, ...] = ()
    endpoints: tuple[tuple[str, int], ...] = ()  # (route, requests), busiest first
    workers: int = 0
    host: str = ""  # the host's name, for the notice's title


@dataclass(frozen=True, slots=True)
class CpuState:
    """Where the watch stands; immutable, replaced by every `evaluate`."""

    last_at: float | None = None  # the last valid sample: where the next one's cover begins
    above_since: float | None = None  # start of the high run in progress
    below_since: float | None = None  # start of the low run in progress (in a peak)
    in_peak: bool = False
    peak_since: float | None = None  # when the peak's high run began
    peak_max: float = 0.0
    peak_top: tuple[ProcessCpu, ...] = ()  # the top processes at peak_max
    peaks: int = 0  # peaks started since the watch began


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to send: the kind (also the event kind), human text and JSON details."""

    kind: NoticeKind
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)


def wants_endpoints(host_percent: float, state: CpuState, policy: CpuPolicy) -> bool:
    """Whether this sample could start a peak, so the shell should count endpoints for it."""
    return not state.in_peak and host_percent >= policy.threshold


def evaluate(
    sample: CpuSample, state: CpuState, policy: CpuPolicy
) -> tuple[CpuState, list[Notice]]:
    """The state after `sample`, and the notices it calls for (at most one)."""
    cpu = sample.host_percent
    if not math.isfinite(cpu):
        # Not observed: the runs restart, and the next sample's cover begins at itself.
        return replace(state, last_at=None, above_since=None, below_since=None), []
    last = state.last_at
    watched = last is not None and 0 <= sample.at - last <= policy.gap
    cover_from = last if watched and last is not None else sample.at
    if cpu >= policy.threshold:
        return _high(sample, state, policy, state.above_since if watched else None, cover_from)
    return _low(sample, state, policy, state.below_since if watched else None, cover_from)


def _high(
    sample: CpuSample,
    state: CpuState,
    policy: CpuPolicy,
    above_since: float | None,
    cover_from: float,
) -> tuple[CpuState, list[Notice]]:
    since = cover_from if above_since is None else above_since
    state = replace(state, last_at=sample.at, above_since=since, below_since=None)
    if state.in_peak:
        if sample.host_percent > state.peak_max:
            state = replace(state, peak_max=sample.host_percent, peak_top=_top(sample))
        return state, []
    high_for = sample.at - since
    if high_for + TIME_SLACK < policy.peak_seconds:
        return state, []
    state = replace(
        state,
        in_peak=True,
        peak_since=since,
        peak_max=sample.host_percent,
        peak_top=_top(sample),
        peaks=state.peaks + 1,
    )
    return state, [started_notice(sample, high_for, policy)]


def _low(
    sample: CpuSample,
    state: CpuState,
    policy: CpuPolicy,
    below_since: float | None,
    cover_from: float,
) -> tuple[CpuState, list[Notice]]:
    if not state.in_peak:
        return replace(state, last_at=sample.at, above_since=None, below_since=None), []
    since = cover_from if below_since is None else below_since
    state = replace(state, last_at=sample.at, above_since=None, below_since=since)
    if sample.at - since + TIME_SLACK < policy.clear:
        return state, []
    peak_since = since if state.peak_since is None else state.peak_since
    notice = ended_notice(sample, state, duration=max(0.0, since - peak_since))
    ended = CpuState(last_at=sample.at, peaks=state.peaks)
    return ended, [notice]


def _top(sample: CpuSample) -> tuple[ProcessCpu, ...]:
    """The busiest processes, highest first; ties by name then pid, so the order is stable."""
    known = [p for p in sample.processes if math.isfinite(p.percent)]
    known.sort(key=lambda p: (-p.percent, p.name, p.pid))
    return tuple(known[:TOP_PROCESSES])


def _where(sample: CpuSample) -> str:
    return f" on {sample.host}" if sample.host else ""


def _process_lines(processes: tuple[ProcessCpu, ...]) -> list[str]:
    if not processes:
        return ["  (none measured)"]
    return [
        f"  {p.name} (pid {p.pid}{'' if p.stack else ', outside the stack'}): {p.percent:.1f} %"
        for p in processes
    ]


def _process_data(processes: tuple[ProcessCpu, ...]) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "pid": p.pid, "percent": round(p.percent, 1), "stack": p.stack}
        for p in processes
    ]


def started_notice(sample: CpuSample, high_for: float, policy: CpuPolicy) -> Notice:
    """What ran hot when the peak was recognised: processes, endpoints, workers."""
    top = _top(sample)
    endpoints = tuple(sorted(sample.endpoints, key=lambda item: (-item[1], item[0])))
    lines = [
        f"Host CPU {sample.host_percent:.1f} % (threshold {policy.threshold:g} %), "
        f"at or over the threshold for {high_for:.1f} s.",
        f"Workers: {sample.workers}",
        "Top processes (% of the host's CPU):",
        *_process_lines(top),
        f"Busiest endpoints, last {policy.endpoint_window:g} s:",
        *([f"  {path}: {count}" for path, count in endpoints] or ["  (no requests recorded)"]),
    ]
    return Notice(
        kind="cpu_peak_started",
        title=f"CPU peak{_where(sample)}: {sample.host_percent:.0f} % "
        f"(threshold {policy.threshold:g} %)",
        body="\n".join(lines),
        data={
            "host": sample.host,
            "host_percent": round(sample.host_percent, 1),
            "threshold": policy.threshold,
            "high_seconds": round(high_for, 3),
            "workers": sample.workers,
            "processes": _process_data(top),
            "endpoints": [{"path": path, "count": count} for path, count in endpoints],
            "endpoint_window": policy.endpoint_window,
        },
    )


def ended_notice(sample: CpuSample, state: CpuState, duration: float) -> Notice:
    """How long the peak lasted, how high it went, and what ran hottest at the highest point."""
    lines = [
        f"CPU was at or over the threshold for {duration:.1f} s; highest {state.peak_max:.1f} %; "
        f"now {sample.host_percent:.1f} %.",
        "Top processes at the highest point (% of the host's CPU):",
        *_process_lines(state.peak_top),
    ]
    return Notice(
        kind="cpu_peak_ended",
        title=f"CPU peak ended{_where(sample)} after {duration:.0f} s, "
        f"highest {state.peak_max:.0f} %",
        body="\n".join(lines),
        data={
            "host": sample.host,
            "duration_seconds": round(duration, 3),
            "max_percent": round(state.peak_max, 1),
            "host_percent": round(sample.host_percent, 1),
            "processes": _process_data(state.peak_top),
        },
    )
