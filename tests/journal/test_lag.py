"""The lag of a store behind the journal, measured from the journal files and the store's
positions alone."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time
from cloud_phoenix.journal.lag import measure_lag

DAY = datetime(2026, 11, 27, tzinfo=UTC)


def write(journal: Path, count: int) -> None:
    writer = JournalWriter(journal, clock=DAY.timestamp)
    for n in range(count):
        when = format_time(DAY + timedelta(milliseconds=n))
        writer.append(
            AccessRecord(when, "GET", "/", "", 200, 5, 1.0, "127.0.0.1", "t", "", "h:1", f"r-{n}")
        )
    writer.close()


def test_lag_counts_bytes_and_age_of_the_oldest_uncollected_record(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    write(journal, 4)
    size = (journal / "access-2026-11-27.jsonl").stat().st_size
    now = datetime(2026, 11, 27, 0, 1, tzinfo=UTC)
    lag = measure_lag(positions({}), journal, now)
    assert lag.bytes == size and lag.files_behind == 1
    assert lag.seconds == pytest.approx(60, abs=0.01)
    assert measure_lag(positions({"access-2026-11-27.jsonl": size}), journal, now).bytes == 0


def test_no_journal_is_no_lag_and_asks_the_store_nothing(tmp_path: Path) -> None:
    def unreachable(files: Collection[str]) -> dict[str, int]:
        raise AssertionError(f"asked for {files}")

    lag = measure_lag(unreachable, tmp_path / "none", DAY)
    assert (lag.bytes, lag.seconds, lag.files_behind, lag.shorter) == (0, 0.0, 0, ())


def test_only_the_positions_of_the_files_here_are_asked_for(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    write(journal, 2)
    asked: list[list[str]] = []

    def read(files: Collection[str]) -> dict[str, int]:
        asked.append(sorted(files))
        return {}

    measure_lag(read, journal, DAY)
    assert asked == [["access-2026-11-27.jsonl"]]


def test_a_file_shorter_than_its_position_is_named_not_counted(tmp_path: Path) -> None:
    """Another file had its name (journal.reuse): reading it from that position would skip
    its lines, so the lag says so instead of 0."""
    journal = tmp_path / "journal"
    write(journal, 2)
    size = (journal / "access-2026-11-27.jsonl").stat().st_size
    lag = measure_lag(positions({"access-2026-11-27.jsonl": size + 500}), journal, DAY)
    assert lag.shorter == ("access-2026-11-27.jsonl",)
    assert (lag.bytes, lag.files_behind) == (0, 0)


def positions(stored: dict[str, int]) -> Callable[[Collection[str]], dict[str, int]]:
    """A store's `positions` that holds `stored`."""
    return lambda files: {name: stored[name] for name in files if name in stored}
