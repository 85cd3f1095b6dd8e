"""A journal file name used twice (journal.reuse): an ECS task replaced by one that got the
same address, and with it the same instance name, on the same UTC day. The collector reads
the new task's file under a name of its own, from its start, and says so."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_phoenix.collector.loop import NAME_REUSED, Collector
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time, journal_files
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.journal.reuse import moved_names
from cloud_phoenix.store import LogQuery
from cloud_phoenix.store.sqlite import SQLiteStore

INSTANCE = "ip-10-40-1-2"  # PHOENIX_INSTANCE=hostname on awsvpc: the task's address
NAME = f"access-2026-11-27.{INSTANCE}.jsonl"
OLD_TASK = datetime(2026, 11, 27, 9, tzinfo=UTC)
NEW_TASK = datetime(2026, 11, 27, 15, tzinfo=UTC)  # replaced the same UTC day


class Task:
    """A task's journal: its workers' writers, each opening the file by its name."""

    def __init__(self, home: Path, started: datetime) -> None:
        self.journal = home / "journal"
        self.started = started
        self.written: list[str] = []
        self.writer = self.worker()

    def worker(self) -> JournalWriter:
        return JournalWriter(self.journal, clock=self.started.timestamp, instance=INSTANCE)

    def serve(self, count: int, writer: JournalWriter | None = None) -> None:
        for _ in range(count):
            n = len(self.written)
            request_id = f"{self.started:%H}-{n}"
            when = format_time(self.started + timedelta(milliseconds=n))
            record = AccessRecord(
                when, "GET", "/", "", 200, 5, 1.0, "10.0.0.9", "t", "", "w:1", request_id
            )
            (writer or self.writer).append(record)
            self.written.append(request_id)


def stored_ids(store: SQLiteStore) -> list[str]:
    return sorted(row.record.request_id for row in store.query(LogQuery(limit=1000)))


def test_a_task_that_reuses_the_old_tasks_name_loses_no_line(tmp_path: Path) -> None:
    """The issue's case: the old task wrote 100 lines, the new one 60 under the same file
    name; none of the 60 was stored while the lag read 0, and when the new task reached 200
    lines its first 100 were lost. Now every line of both tasks is stored once."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    old = Task(tmp_path / "old-task", OLD_TASK)
    old.serve(100)
    assert Collector(store, old.journal).collect_once() == 100

    new = Task(tmp_path / "new-task", NEW_TASK)
    new.serve(60)
    collector = Collector(store, new.journal)
    assert collector.collect_once() == 60
    assert collector.stats.moved == 1
    (moved,) = journal_files(new.journal)
    assert moved != NAME and moved.startswith(f"access-2026-11-27.{INSTANCE}-")
    assert moved_names(new.journal) == {NAME: moved}

    # The worker that held the file open writes on into it; one started later (a respawned
    # worker) opens the old name, and the link leads it to the moved file.
    new.serve(70)
    new.serve(70, writer=new.worker())
    assert len(new.written) == 200
    assert collector.collect_once() == 140
    assert stored_ids(store) == sorted(old.written + new.written)
    assert store.count() == 300

    lag = collector.lag(NEW_TASK)
    assert (lag.bytes, lag.shorter) == (0, ())
    (event,) = store.events(kind=NAME_REUSED)
    assert event.data["file"] == NAME and event.data["moved_to"] == moved
    assert event.data["size"] < event.data["stored_position"]
    assert "no line skipped" in event.message
    again = Collector(store, new.journal)  # a restart: the moved file is the store's
    assert again.collect_once() == 0 and again.stats.moved == 0


def test_a_reused_name_is_found_when_the_new_file_is_already_the_longer(tmp_path: Path) -> None:
    """The collector first looks once the new task's file has outgrown the old one's
    position (a collector that started late, a store that was down): the size says nothing,
    the file's first record tells."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    old = Task(tmp_path / "old-task", OLD_TASK)
    old.serve(100)
    assert Collector(store, old.journal).collect_once() == 100
    new = Task(tmp_path / "new-task", NEW_TASK)
    new.serve(200)

    lag = measure_lag(store.positions, new.journal, NEW_TASK)
    assert lag.shorter == ()  # nothing for /ready to see: only the collector can tell
    collector = Collector(store, new.journal)
    assert collector.collect_once() == 200
    assert stored_ids(store) == sorted(old.written + new.written)
    (event,) = store.events(kind=NAME_REUSED)
    assert "first record" in event.message


def test_the_file_the_store_read_is_read_on_without_a_move(tmp_path: Path) -> None:
    """A collector that restarts, or a second one on the same journal, goes on from the
    store's position: the first-record check finds the file the store read."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    task = Task(tmp_path / "task", OLD_TASK)
    task.serve(30)
    assert Collector(store, task.journal).collect_once() == 30
    task.serve(20)
    again = Collector(store, task.journal)
    assert again.collect_once() == 20
    assert again.collect_once() == 0
    assert (again.stats.moved, journal_files(task.journal)) == (0, [NAME])
    assert store.events(kind=NAME_REUSED) == []
    assert store.count() == 50


@pytest.mark.parametrize(
    ("written_after", "into_line", "stored_after"),
    [
        (50, 0, 50),  # longer than the store's position again when the collector looks
        (10, 0, 10),  # still shorter
        (50, 7, 49),  # cut mid-line: the new line glued to what is left of it is malformed
    ],
)
def test_a_file_a_crash_cut_short_is_read_on_from_where_it_ends_now(
    tmp_path: Path, written_after: int, into_line: int, stored_after: int
) -> None:
    """The host went down before the disk had the end of the journal that the store had
    read (a database on another host keeps its positions). The file is the store's (its
    first record is), so the store holds every whole line left: the lines written after
    are stored, none twice, none skipped but one glued to a cut line."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    task = Task(tmp_path / "task", OLD_TASK)
    task.serve(100)
    assert Collector(store, task.journal).collect_once() == 100
    path = task.journal / NAME
    lines = path.read_bytes().splitlines(keepends=True)
    kept = sum(len(line) for line in lines[:60])
    os.truncate(path, kept + into_line)  # what the disk had
    task.serve(written_after, writer=task.worker())  # the restarted instance

    collector = Collector(store, task.journal)
    assert collector.collect_once() == stored_after
    assert collector.stats.malformed == written_after - stored_after
    assert len(stored_ids(store)) == len(set(stored_ids(store))) == 100 + stored_after
    (moved,) = journal_files(task.journal)
    assert moved != NAME and moved_names(task.journal) == {NAME: moved}
    (event,) = store.events(kind=NAME_REUSED)
    assert event.data["collected"] == kept and "crash cut it short" in event.message
    again = Collector(store, task.journal)  # a restart: the moved file is the store's
    assert again.collect_once() == 0 and again.stats.moved == 0
