"""The figures of a benchmark run: one row per goal, printed as a Markdown table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    """A figure, its goal and what was measured; `passed` is None for a figure without goal."""

    figure: str
    goal: str
    measured: str
    passed: bool | None
    detail: str


def say(text: str) -> None:
    print(text, flush=True)


def print_table(rows: list[Row]) -> None:
    """The table (paste-able into docs/BENCHMARKS.md), then each figure's details."""
    say("\n| figure | goal | measured | result |\n| --- | --- | --- | --- |")
    for row in rows:
        result = "-" if row.passed is None else ("PASS" if row.passed else "FAIL")
        say(f"| {row.figure} | {row.goal} | {row.measured} | {result} |")
    say("")
    for row in rows:
        say(f"- {row.figure.strip()}: {row.detail}")
