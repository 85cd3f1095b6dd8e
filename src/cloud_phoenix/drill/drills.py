"""Drills against a running local stack: a crash storm under load, and a load ramp.

Both only send traffic to loopback, are bounded in count and time, and report what an
operator wants to know: failures other than `/crash`, latency, how long the worker count
stayed below the desired count, how fast scaling reacted, and whether every answered
request is in the store exactly once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cloud_phoenix.drill.loadgen import Injector, Phase, Result, drive
from cloud_phoenix.drill.stats import summarize
from cloud_phoenix.journal import format_time
from cloud_phoenix.stack.status import StackStatus, StatusError, read_status
from cloud_phoenix.store import Cursor, LogQuery, LogStore, StoreError


@dataclass
class StatusSampler:
    """Reads the stack's status file every `interval` seconds while a drill runs."""

    run_dir: Path
    interval: float = 0.1
    samples: list[tuple[float, StackStatus]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)
        self.started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                status = read_status(self.run_dir)
            except StatusError:  # the drill's command has read it once: a sample is missing
                continue
            if status is not None:
                self.samples.append((time.monotonic() - self.started, status))

    def __enter__(self) -> StatusSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def workers(self) -> Iterator[tuple[float, int, int]]:
        """(seconds since start, desired, running) for every sample."""
        for at, status in self.samples:
            yield at, status.workers.desired, status.workers.running


def stored_ids(store: LogStore, since: str) -> Counter[str]:
    """Request ids of every record since `since`, counted (duplicates show as > 1)."""
    ids: Counter[str] = Counter()
    query = LogQuery(limit=1000, since=since)
    while True:
        rows = store.query(query)
        ids.update(row.record.request_id for row in rows)
        if len(rows) < query.limit:
            return ids
        query = LogQuery(limit=1000, since=since, before=Cursor(rows[-1].record.time, rows[-1].pos))


def await_records(
    store: LogStore, since: str, wanted: set[str], timeout: float = 30.0
) -> Counter[str]:
    """Stored ids once all of `wanted` are in (the collector catches up), or at `timeout`."""
    deadline = time.monotonic() + timeout
    ids: Counter[str] = Counter()
    while time.monotonic() < deadline:
        try:
            ids = stored_ids(store, since)
        except StoreError:
            ids = Counter()
        if wanted <= set(ids):
            return ids
        time.sleep(0.25)
    return ids


@dataclass(frozen=True)
class CrashReport:
    """What a crash storm showed."""

    sent: int
    crashes: int
    failed: dict[str, int]  # reason -> count, /crash excluded
    failed_ids: list[str]  # the first few, to look up in the edge's log
    p50_ms: float | None
    p99_ms: float | None
    longest_below_desired_s: float
    missing: list[str]
    doubled: list[str]

    @property
    def passed(self) -> bool:
        return not self.failed and not self.missing and not self.doubled


def answered(results: list[Result]) -> set[str]:
    return {r.request_id for r in results if r.status is not None}


def crash_drill(
    base_url: str,
    run_dir: Path,
    store: LogStore,
    *,
    seconds: float = 20.0,
    rps: float = 100.0,
    crash_every: float = 0.25,
    paths: tuple[str, ...] = ("/", "/logs?limit=5"),
    progress: Callable[[str], None] = lambda _m: None,
) -> CrashReport:
    """A `/crash` every `crash_every` s for `seconds` s under `rps` req/s of `paths`."""
    since = format_time(datetime.now(UTC) - timedelta(seconds=1))
    before = read_status(run_dir)
    episodes_before = set(before.below_desired) if before else set()
    progress(f"crash storm: {seconds:g} s of {rps:g} req/s, a /crash every {crash_every:g} s")
    with StatusSampler(run_dir) as sampler:
        run = drive(
            base_url,
            [Phase(seconds, rps, paths)],
            Injector("/crash", crash_every, seconds),
            request_id_prefix="drill",
        )
    summary = summarize(run.load)
    progress(f"load: {summary.line()}; waiting for the collector")
    ids = await_records(store, since, answered(run.load) | answered(run.injected))
    after = read_status(run_dir)
    ended = [e for e in (after.below_desired if after else []) if e not in episodes_before]
    episodes = [lasted for _when, lasted in ended]
    ongoing = [at for at, desired, running in sampler.workers() if running < desired]
    longest = max([*episodes, 0.0])
    if ongoing and not episodes:  # too short for the supervisor to close an episode: sample
        longest = max(longest, sampler.interval)
    drill_ids = answered(run.load)
    return CrashReport(
        sent=summary.sent,
        crashes=len(run.injected),
        failed=dict(summary.reasons),
        failed_ids=[f.request_id for f in summary.failed[:10]],
        p50_ms=summary.p50_ms,
        p99_ms=summary.p99_ms,
        longest_below_desired_s=longest,
        missing=sorted(drill_ids - set(ids)),
        doubled=sorted(rid for rid, n in ids.items() if n > 1 and rid.startswith("drill")),
    )


@dataclass(frozen=True)
class ScaleReport:
    """How fast the worker count followed a load ramp."""

    rps: float
    target_workers: int
    scale_out_s: float | None  # load start → running >= target
    scale_in_s: float | None  # load end → back at the minimum
    peak_workers: int
    failed: dict[str, int]

    @property
    def passed(self) -> bool:
        return self.scale_out_s is not None and self.scale_in_s is not None and not self.failed


def scale_drill(
    base_url: str,
    run_dir: Path,
    *,
    rps: float = 50.0,
    seconds: float = 10.0,
    rps_per_worker: float = 10.0,
    min_workers: int = 1,
    settle: float = 75.0,
    progress: Callable[[str], None] = lambda _m: None,
) -> ScaleReport:
    """`rps` req/s for `seconds` s, then quiet until the stack is back at `min_workers`
    (at most `settle` s: the scale-in window plus a margin)."""
    target = max(min_workers, -(-int(rps) // int(rps_per_worker)))
    progress(f"scale drill: {rps:g} req/s for {seconds:g} s, expecting {target} workers")
    with StatusSampler(run_dir) as sampler:
        run = drive(base_url, [Phase(seconds, rps, ("/",))], request_id_prefix="scale")
        load_end = time.monotonic() - sampler.started
        progress("load stopped; waiting for the scale-in window")
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            samples = list(sampler.workers())
            if (
                samples
                and samples[-1][0] > load_end
                and samples[-1][1:] == (min_workers, min_workers)
            ):
                break
            time.sleep(0.2)
    samples = list(sampler.workers())
    out = next((at for at, _d, running in samples if running >= target), None)
    back = next(
        (
            at - load_end
            for at, desired, running in samples
            if at > load_end and desired == running == min_workers
        ),
        None,
    )
    return ScaleReport(
        rps=rps,
        target_workers=target,
        scale_out_s=out,
        scale_in_s=back,
        peak_workers=max((running for _a, _d, running in samples), default=0),
        failed=dict(summarize(run.load).reasons),
    )
