from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_phoenix.collector.loop import Collector, next_batch_size
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time
from cloud_phoenix.store import Cursor, LogQuery, StoreUnavailable
from cloud_phoenix.store.sqlite import SQLiteStore


def record(n: int, when: datetime) -> AccessRecord:
    return AccessRecord(
        format_time(when), "GET", "/", "", 200, 5, 1.0, "127.0.0.1", "t", "", "h:1", f"req-{n}"
    )


def write(
    journal: Path, count: int, start: int = 0, day: datetime = datetime(2026, 11, 27, tzinfo=UTC)
) -> None:
    writer = JournalWriter(journal, clock=day.timestamp)
    for n in range(start, start + count):
        writer.append(record(n, day + timedelta(milliseconds=n)))
    writer.close()


def ids(store: SQLiteStore) -> list[str]:
    return [row.record.request_id for row in store.query(LogQuery(limit=1000))]


def test_collects_every_line_once_across_days_and_runs(tmp_path: Path) -> None:
    journal, store = tmp_path / "journal", SQLiteStore(tmp_path / "db.sqlite3")
    write(journal, 120)
    write(journal, 30, start=120, day=datetime(2026, 11, 28, tzinfo=UTC))
    collector = Collector(store, journal, batch_size=7)
    assert collector.collect_once() == 150
    assert collector.collect_once() == 0
    write(journal, 10, start=150, day=datetime(2026, 11, 28, tzinfo=UTC))
    assert Collector(store, journal, batch_size=7).collect_once() == 10
    assert sorted(ids(store)) == sorted(f"req-{n}" for n in range(160))


def test_two_collectors_racing_never_double_a_record(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    write(journal, 200)
    first = Collector(SQLiteStore(tmp_path / "db"), journal, batch_size=13)
    second = Collector(SQLiteStore(tmp_path / "db"), journal, batch_size=17)
    for _ in range(40):
        first.collect_once()
        second.collect_once()
    store = SQLiteStore(tmp_path / "db")
    assert store.count() == 200
    assert len(set(ids(store))) == 200


def test_a_malformed_line_is_skipped_and_counted(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    write(journal, 3)
    with open(journal / "access-2026-11-27.jsonl", "ab") as handle:
        handle.write(b"{broken\n")
    write(journal, 2, start=3)
    collector = Collector(SQLiteStore(tmp_path / "db"), journal)
    assert collector.collect_once() == 5
    assert collector.stats.malformed == 1


def test_an_unreachable_store_raises_and_the_journal_keeps_everything(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    write(journal, 5)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    collector = Collector(SQLiteStore(blocker / "db.sqlite3"), journal)
    with pytest.raises(StoreUnavailable):
        collector.collect_once()
    good = SQLiteStore(tmp_path / "db.sqlite3")
    assert Collector(good, journal).collect_once() == 5


@pytest.mark.parametrize(
    ("interval", "max_backoff", "expected"),
    [
        (0.1, 10.0, [0.5, 1.0, 2.0, 4.0, 0.1, 0.1]),  # from half a second
        (1.0, 5.0, [2.0, 4.0, 5.0, 5.0, 1.0, 1.0]),  # from two intervals, to the bound
    ],
)
def test_run_backs_off_while_the_store_is_down_then_catches_up(
    tmp_path: Path, interval: float, max_backoff: float, expected: list[float]
) -> None:
    journal = tmp_path / "journal"
    write(journal, 5)
    blocker = tmp_path / "db"
    blocker.write_text("in the way")
    sleeps: list[float] = []

    def sleep(seconds: float) -> bool:
        sleeps.append(seconds)
        if len(sleeps) == 4:
            blocker.unlink()  # the outage ends
        return len(sleeps) >= 6

    store = SQLiteStore(blocker / "db.sqlite3")
    collector = Collector(store, journal, interval=interval, max_backoff=max_backoff, sleep=sleep)
    collector.run()
    assert sleeps == expected
    assert collector.stats.outages == 1
    assert store.count() == 5


def test_instances_sharing_one_store_keep_their_positions_apart(tmp_path: Path) -> None:
    """Two pods, each with its own journal, one database: nothing of either is lost."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    day = datetime(2026, 11, 27, tzinfo=UTC)
    for instance in ("pod-a", "pod-b"):
        writer = JournalWriter(tmp_path / instance, clock=day.timestamp, instance=instance)
        for n in range(30):
            writer.append(record(n, day))  # same times, same offsets in both journals
        writer.close()
        assert Collector(store, tmp_path / instance, batch_size=7).collect_once() == 30
    assert store.count() == 60
    assert set(store.positions()) == {
        "access-2026-11-27.pod-a.jsonl",
        "access-2026-11-27.pod-b.jsonl",
    }
    row = store.query(LogQuery(limit=1))[0]
    assert row.pos.startswith("2026-11-27:pod-")
    assert Cursor.decode(Cursor(row.record.time, row.pos).encode()).pos == row.pos  # pages on


def test_the_batch_doubles_while_behind_and_falls_back_once_caught_up() -> None:
    sizes = [500]
    for behind in (True, True, True, True, True, True, False, True):
        sizes.append(next_batch_size(sizes[-1], 500, 16_000, behind))
    assert sizes == [500, 1000, 2000, 4000, 8000, 16_000, 16_000, 500, 1000]


def test_a_backlog_goes_in_growing_batches_read_ahead_and_exactly_once(tmp_path: Path) -> None:
    """A backlog of 3,000 lines, a malformed one among them and one still being written:
    batches of 10 growing to 400, the next read while one commits; every line once."""
    journal, store = tmp_path / "journal", SQLiteStore(tmp_path / "db.sqlite3")
    write(journal, 1500)
    (path,) = journal.iterdir()
    with path.open("ab") as out:
        out.write(b"{not json\n")
    write(journal, 1500, start=1500)
    with path.open("ab") as out:
        out.write(record(3000, datetime(2026, 11, 28, tzinfo=UTC)).to_line()[:40])
    collector = Collector(store, journal, batch_size=10)
    collector.max_batch = 400
    collector.read_ahead = True  # as on a database server (SQLite's default is off)
    assert collector.collect_once() == 3000
    # Fixed batches of 10 would take 301; doubling reaches 400 after six.
    assert collector.stats.batches <= 15
    assert collector.stats.malformed == 1
    assert store.count() == 3000
    assert sorted(ids_all(store)) == sorted(f"req-{n}" for n in range(3000))
    assert store.positions() == {path.name: path.stat().st_size - 40}
    assert collector.collect_once() == 0


def ids_all(store: SQLiteStore) -> list[str]:
    found: list[str] = []
    query = LogQuery(limit=1000)
    while page := store.query(query):
        found += [row.record.request_id for row in page]
        last = page[-1]
        query = LogQuery(limit=1000, before=Cursor(last.record.time, last.pos))
    return found
