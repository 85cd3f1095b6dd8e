"""The one backoff policy: after each consecutive failure wait longer, up to a bound.

Restarted children (the supervisor's, the key maker's child), the collector while its store
is down and a notification channel's retries all wait by it, each with its own numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """No wait before a failure, then `first_delay`, times `factor` after each further
    failure, never more than `max_delay` (seconds)."""

    first_delay: float
    max_delay: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        for name in ("first_delay", "max_delay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be 0 or more seconds, got {value}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            raise ValueError(f"factor must be 1 or more, got {self.factor}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after `failures` consecutive failures (0 after none)."""
        if failures <= 0:
            return 0.0
        try:
            grown = self.first_delay * self.factor ** (failures - 1)
        except OverflowError:  # a float power past ~1e308: far beyond any bound
            return self.max_delay
        return float(min(self.max_delay, grown))


# A supervised child that exits is restarted at once, then after 0.25 s, 0.5 s ... 10 s
# while it keeps failing (proc.child.HEALTHY_AFTER of uptime starts the count again).
RESTART = Backoff(first_delay=0.25, max_delay=10.0)
