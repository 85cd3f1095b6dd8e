"""The autoscaler's decision: how many workers (or a cluster's replicas) the edge's request
rate asks for.

Scale-out is immediate; scale-in follows the Kubernetes HPA stabilisation window: the
desired count is the highest per-sample target of the last `scale_in_window` seconds, so
a count only falls once every sample in the window asks for fewer, one step at a time.
Pure: the supervisor passes the monotonic time and the rate, and applies the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Bounds and thresholds; the constructor refuses values that cannot work."""

    min_workers: int = 1
    max_workers: int = 8
    rps_per_worker: float = 10.0
    scale_in_window: float = 60.0  # seconds
    unit: str = "workers"  # what is counted, for the reasons: "workers", "replicas"

    def __post_init__(self) -> None:
        # gunicorn ignores TTOU at one worker, so a lower minimum would never be reached.
        if self.min_workers < 1:
            raise ValueError(f"min_workers must be at least 1, got {self.min_workers}")
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers={self.min_workers} is above max_workers={self.max_workers}: "
                "lower the minimum or raise the maximum"
            )
        if not (math.isfinite(self.rps_per_worker) and self.rps_per_worker > 0):
            raise ValueError(f"rps_per_worker must be a positive number, got {self.rps_per_worker}")
        if not (math.isfinite(self.scale_in_window) and self.scale_in_window >= 0):
            raise ValueError(
                f"scale_in_window must be 0 or more seconds, got {self.scale_in_window}"
            )


@dataclass(frozen=True, slots=True)
class ScaleState:
    """The desired count and the samples that can still hold it up.

    `history` is (time, target) oldest first with strictly falling targets: a sample
    followed by one asking for as many or more can never be the window's maximum again,
    so it is dropped, which keeps the state at most `max_workers` entries long.
    """

    desired: int
    history: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """The next state, whether the desired count moved, and why (for the event log)."""

    state: ScaleState
    changed: bool
    reason: str


def _known(rate: float | None) -> bool:
    return rate is not None and math.isfinite(rate) and rate >= 0


def target_workers(rate: float, policy: ScalePolicy) -> int:
    """Workers needed for `rate` req/s: ceil(rate / rps_per_worker) within [min, max]."""
    if not (rate >= 0):  # also catches NaN
        raise ValueError(f"rate must be 0 or more req/s, got {rate}")
    share = rate / policy.rps_per_worker
    if share >= policy.max_workers:  # also spares math.ceil an infinity
        return policy.max_workers
    needed = math.ceil(share)
    # A division that lands a hair above a whole number (1.1 / 0.1) must not add a worker:
    # `needed` is the smallest count whose capacity covers the rate.
    if needed > 0 and (needed - 1) * policy.rps_per_worker >= rate:
        needed -= 1
    return max(policy.min_workers, min(policy.max_workers, needed))


def initial_state(policy: ScalePolicy) -> ScaleState:
    """Start at the minimum with no history."""
    return ScaleState(desired=policy.min_workers)


def decide(now: float, rate: float | None, state: ScaleState, policy: ScalePolicy) -> ScaleDecision:
    """One sample: `rate` req/s at monotonic time `now` (None, NaN, inf, < 0: unknown)."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite monotonic time, got {now}")
    went_back = any(t > now for t, _ in state.history)
    target = target_workers(rate, policy) if rate is not None and _known(rate) else None
    # An unknown rate, or a clock that went back (we cannot tell how long the quiet lasted),
    # is recorded as asking for the current count: it holds the count for a whole window
    # instead of letting the low samples around it scale in early.
    recorded = target if target is not None and not went_back else max(target or 0, state.desired)
    cutoff = now - policy.scale_in_window
    kept = tuple((t, n) for t, n in state.history if cutoff < t <= now and n > recorded)
    history = (*kept, (now, recorded))
    desired = max(policy.min_workers, min(policy.max_workers, history[0][1]))
    new_state = ScaleState(desired=desired, history=history)
    return ScaleDecision(
        new_state, desired != state.desired, _reason(rate, state, new_state, policy, went_back)
    )


def _reason(
    rate: float | None, old: ScaleState, new: ScaleState, policy: ScalePolicy, went_back: bool
) -> str:
    shown = f"rate {rate:.1f} req/s" if rate is not None and _known(rate) else "rate unknown"
    if went_back:
        shown += f" (clock went back; holding for {policy.scale_in_window:g} s)"
    if new.desired > old.desired:
        capacity = old.desired * policy.rps_per_worker
        limit = " (max)" if new.desired == policy.max_workers else ""
        return f"{shown} > {capacity:g} → {new.desired} {policy.unit}{limit}"
    if new.desired < old.desired:
        capacity = new.desired * policy.rps_per_worker
        window = policy.scale_in_window
        return f"rate at most {capacity:g} req/s for {window:g} s → {new.desired} {policy.unit}"
    return f"{shown}: {new.desired} {policy.unit}"
