"""Medians, percentiles and ratios for figures measured over several rounds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """The ratio within each round: a drift of the shared machine hits both sides of a round
    alike, so the median of these is steadier than the ratio of the two medians."""
    return [ratio(n, d) for n, d in zip(numerators, denominators, strict=True)]


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """`median (min-max)` of a few round figures."""
    if not values:
        return "n/a"
    return f"{median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
