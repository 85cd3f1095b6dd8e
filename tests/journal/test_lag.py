"""The lag of a store behind the journal, measured from the journal files and the store's
positions alone."""

from __future__ import annotations

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
    lag = measure_lag({}, journal, now)
    assert lag.bytes == size and lag.files_behind == 1
    assert lag.seconds == pytest.approx(60, abs=0.01)
    assert measure_lag({"access-2026-11-27.jsonl": size}, journal, now).bytes == 0


def test_no_journal_is_no_lag(tmp_path: Path) -> None:
    lag = measure_lag({}, tmp_path / "none", DAY)
    assert (lag.bytes, lag.seconds, lag.files_behind) == (0, 0.0, 0)
