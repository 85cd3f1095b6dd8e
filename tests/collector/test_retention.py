"""What the collector deletes (collector.retention), and the collector deleting it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.collector.retention import (
    JournalFile,
    files_to_delete,
    first_kept_day,
    positions_to_forget,
)
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time, journal_files
from cloud_phoenix.journal.reuse import links, move_aside, reissued_name
from cloud_phoenix.store.sqlite import SQLiteStore

TODAY = date(2026, 11, 27)


def days_ago(n: int) -> date:
    return TODAY - timedelta(days=n)


# -- the decisions ------------------------------------------------------------------------


def test_today_counts_as_one_of_the_retention_days() -> None:
    assert first_kept_day(TODAY, 7) == days_ago(6)
    assert first_kept_day(TODAY, 1) == TODAY
    with pytest.raises(ValueError, match="at least 1"):
        first_kept_day(TODAY, 0)


def test_only_files_past_the_retention_and_wholly_collected_are_deleted() -> None:
    files = [
        JournalFile("access-2026-11-17.jsonl", days_ago(10), 500, 500),
        JournalFile("access-2026-11-18.jsonl", days_ago(9), 500, 499),  # a line not stored
        JournalFile("access-2026-11-20.a.jsonl", days_ago(7), 0, 0),
        JournalFile("access-2026-11-20.jsonl", days_ago(7), 500, 500),
        JournalFile("access-2026-11-21.jsonl", days_ago(6), 500, 500),  # kept: 7 days
        JournalFile("access-2026-11-27.jsonl", TODAY, 500, 500),
    ]
    assert files_to_delete(files, TODAY, 7) == [
        "access-2026-11-17.jsonl",
        "access-2026-11-20.a.jsonl",
        "access-2026-11-20.jsonl",
    ]


def test_positions_are_forgotten_at_twice_the_retention_unless_the_file_is_here() -> None:
    stored = {
        "access-2026-11-14.pod-a.jsonl": days_ago(13),  # kept: 14 days, today included
        "access-2026-11-13.pod-a.jsonl": days_ago(14),
        "access-2026-11-13.pod-b.jsonl": days_ago(14),  # still in this journal
        "access-2026-10-01.jsonl": days_ago(57),
    }
    local = {"access-2026-11-13.pod-b.jsonl"}
    assert positions_to_forget(stored, local, TODAY, 7) == [
        "access-2026-10-01.jsonl",
        "access-2026-11-13.pod-a.jsonl",
    ]


# -- the collector ------------------------------------------------------------------------


def write(journal: Path, day: date, count: int, instance: str = "") -> str:
    moment = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    writer = JournalWriter(journal, clock=moment.timestamp, instance=instance)
    for n in range(count):
        record = AccessRecord(
            format_time(moment), "GET", "/", "", 200, 5, 1.0, "", "", "", "w", f"{day}-{n}"
        )
        writer.append(record)
    writer.close()
    return f"access-{day}.{instance}.jsonl" if instance else f"access-{day}.jsonl"


@pytest.mark.parametrize("prune_journal", [True, False])
def test_the_collector_prunes_its_journal_and_the_positions_of_files_long_gone(
    tmp_path: Path, prune_journal: bool
) -> None:
    journal, store = tmp_path / "journal", SQLiteStore(tmp_path / "db.sqlite3")
    old = write(journal, days_ago(10), 3)
    moved = reissued_name(old)
    move_aside(journal, old, moved)  # a name moved aside that day: its link goes too
    recent = write(journal, days_ago(1), 3)
    gone = write(tmp_path / "other-pod", days_ago(20), 2, instance="pod-b")
    alive = write(tmp_path / "other-pod", days_ago(3), 2, instance="pod-b")
    assert Collector(store, tmp_path / "other-pod").collect_once() == 4
    assert gone in store.positions()
    collector = Collector(store, journal, retention_days=7, prune_journal=prune_journal)
    assert collector.collect_once() == 6
    behind = write(journal, days_ago(9), 2)  # not collected yet: never deleted
    (journal / behind).write_bytes((journal / behind).read_bytes()[:-1])  # a line unended

    collector.prune(TODAY)
    kept = [behind, recent] if prune_journal else [moved, behind, recent]
    assert journal_files(journal) == kept
    assert links(journal) == []
    assert collector.stats.pruned == (1 if prune_journal else 0)
    assert set(store.positions()) == {moved, recent, alive}  # not `gone`
    assert store.count() == 10  # records are the database's: never pruned here


def test_run_prunes_and_the_settings_say_whether_the_journal_is_the_collectors(
    tmp_path: Path,
) -> None:
    old = date.today() - timedelta(days=30)
    home = tmp_path / "home"
    name = write(home / "journal", old, 2)
    for backup_at, left in (("03:00", [name]), ("off", [])):
        settings = Settings.from_env({"PHOENIX_HOME": str(home), "PHOENIX_BACKUP_AT": backup_at})
        store = SQLiteStore(tmp_path / "db.sqlite3")
        collector = Collector.from_settings(store, settings)
        collector.stop()  # asked before it runs: one pass, then its last
        collector.run()
        assert journal_files(home / "journal") == left, backup_at
