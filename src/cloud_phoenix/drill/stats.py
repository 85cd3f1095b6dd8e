"""What a load run amounted to: failures, latency percentiles, achieved rate."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cloud_phoenix.drill.loadgen import OVERLOADED, Result


@dataclass(frozen=True)
class Failure:
    """A request that got no answer, or an answer of 400 or more."""

    path: str
    request_id: str
    reason: str


@dataclass(frozen=True)
class Summary:
    """What a run amounted to: latencies of answered requests in ms, rate of the sends."""

    sent: int
    ok: int
    failed: tuple[Failure, ...]
    p50_ms: float | None
    p99_ms: float | None
    achieved_rps: float
    per_path: dict[str, int]
    reasons: dict[str, int]

    def line(self) -> str:
        """One line for a terminal or a log."""
        p50 = "-" if self.p50_ms is None else f"{self.p50_ms:.1f}"
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.1f}"
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.reasons.items()))
        return (
            f"{self.sent} sent, {self.ok} ok, {len(self.failed)} failed"
            f"{f' ({reasons})' if reasons else ''}, p50 {p50} ms, p99 {p99} ms, "
            f"{self.achieved_rps:.1f} req/s"
        )


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile: the smallest value with p % of values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def failure_reason(result: Result) -> str | None:
    """Why a result counts as failed, or None when it succeeded.

    Every status of 400 or more fails, 429 included: the drills send only valid requests,
    so a 4xx is a bug, and a 429 means a user was turned away, which the platform exists
    to prevent.
    """
    if result.error is not None:
        return result.error
    if result.status is None or result.status >= 400:
        return f"HTTP {result.status}"
    return None


def summarize(results: Sequence[Result], exclude_paths: Sequence[str] = ("/crash",)) -> Summary:
    """Count, time and classify results, leaving out `exclude_paths` (with any query)."""
    kept = [
        r
        for r in results
        if r.path not in exclude_paths and r.path.partition("?")[0] not in exclude_paths
    ]
    failed = tuple(
        Failure(r.path, r.request_id, reason)
        for r in kept
        if (reason := failure_reason(r)) is not None
    )
    # Percentiles of answered requests: a refused connection is not a fast answer, and
    # failures are counted on their own.
    latencies = [r.latency * 1000 for r in kept if r.latency is not None and r.status is not None]
    sends = sorted(r.sent_at for r in kept if r.error != OVERLOADED)
    span = sends[-1] - sends[0] if sends else 0.0
    # n sends evenly spaced over a span are n - 1 intervals: the rate is (n - 1) / span.
    rate = (len(sends) - 1) / span if span > 0 else 0.0
    return Summary(
        sent=len(kept),
        ok=len(kept) - len(failed),
        failed=failed,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        achieved_rps=rate,
        per_path=dict(Counter(r.path for r in kept)),
        reasons=dict(Counter(f.reason for f in failed)),
    )
