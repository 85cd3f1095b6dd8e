"""The figures of a benchmark run: one row per goal, printed as a Markdown table."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wrk import ensure_wrk


@dataclass(frozen=True, slots=True)
class Row:
    """A figure, its goal and what was measured; `passed` is None for a figure without goal."""

    figure: str
    goal: str
    measured: str
    passed: bool | None
    detail: str


def machine(title: str) -> str:
    """The header of a run: what ran, on how many cores, with which Python, at which load."""
    return (
        f"{title}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


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


class Process(Protocol):
    """A server or stack a benchmark started: stopped at the end, its log shown on failure."""

    @property
    def name(self) -> str: ...

    def log_tail(self) -> str: ...

    def stop(self) -> None: ...


def run_bench(
    title: str, quick: bool, body: Callable[[str, Path, list[Process]], list[Row]]
) -> int:
    """Find wrk, print the header, run `body(wrk, scratch folder, started)` and the table.

    `body` appends what it starts to `started`: all of it is stopped whatever happens, and
    its logs are printed when the run fails. 0 when the run completed (goals met or not),
    1 when it broke, 2 without wrk.
    """
    try:
        wrk = ensure_wrk()
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    say(machine(f"{title} ({'quick' if quick else 'full'})"))
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp:
        started: list[Process] = []
        try:
            rows = body(wrk, Path(tmp), started)
        except Exception as exc:
            print(f"bench: failed: {exc}", file=sys.stderr)
            for process in started:
                print(f"--- {process.name} log ---\n{process.log_tail()}", file=sys.stderr)
            return 1
        finally:
            for process in started:
                process.stop()
    say(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print_table(rows)
    return 0
