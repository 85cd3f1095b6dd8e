"""The LogStore contract, run against every backend: SQLite, PostgreSQL and MongoDB.

Each test gets an empty store of each kind: a SQLite file in tmp_path, a fresh database
on the session's real PostgreSQL server, and (when PHOENIX_TEST_MONGODB_URL is set) a
fresh MongoDB database.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloud_phoenix.backup import restore_backup, run_backup
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import AccessRecord, JournalEntry, format_time, position_key
from cloud_phoenix.store import (
    Cursor,
    LogQuery,
    LogRow,
    LogStore,
    PositionConflict,
    StoreUnavailable,
    open_store,
)
from cloud_phoenix.store.sqlite import SQLiteStore
from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

SECRET = "s3cret-Pa55word"
FILE = "access-2024-05-01.jsonl"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


# -- building records -------------------------------------------------------------------


def at(seconds: float) -> str:
    """The stored form of T0 + seconds."""
    return format_time(T0 + timedelta(seconds=seconds))


def entry(
    offset: int, time: str, *, file: str = FILE, status: int = 200, path: str = "/", **fields: Any
) -> JournalEntry:
    values: dict[str, Any] = {
        "time": time,
        "method": "GET",
        "path": path,
        "query": "",
        "status": status,
        "bytes": 512,
        "duration_ms": 1.5,
        "remote_addr": "127.0.0.1",
        "user_agent": "pytest",
        "referrer": "",
        "worker": "w1",
        "request_id": f"req-{offset}",
    }
    values.update(fields)
    record = AccessRecord(**values)
    return JournalEntry(position_key(file, offset), file, offset, record)


def batch(
    times: list[str], *, start: int = 0, file: str = FILE, **fields: Any
) -> tuple[list[JournalEntry], int]:
    """Entries 100 bytes apart from `start`, and the offset where the batch ends."""
    entries = [entry(start + 100 * i, time, file=file, **fields) for i, time in enumerate(times)]
    return entries, start + 100 * len(times)


def newest_first(entries: list[JournalEntry]) -> list[tuple[str, AccessRecord]]:
    ordered = sorted(entries, key=lambda e: (e.record.time, e.pos), reverse=True)
    return [(e.pos, e.record) for e in ordered]


def rows(result: list[LogRow]) -> list[tuple[str, AccessRecord]]:
    return [(row.pos, row.record) for row in result]


def page_through(store: LogStore, query: LogQuery) -> list[LogRow]:
    """Every row `query` matches, fetched page by page with cursors."""
    seen: list[LogRow] = []
    page = store.query(query)
    for _ in range(1000):
        seen.extend(page)
        if len(page) < query.limit:
            return seen
        last = page[-1]
        cursor = Cursor.decode(Cursor(last.record.time, last.pos).encode())
        page = store.query(replace(query, before=cursor))
    raise AssertionError("pagination did not end")


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- schema -------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_keeps_data(
    store: LogStore, connect: Callable[[], LogStore]
) -> None:
    entries, end = batch([at(1), at(2)])
    store.commit_batch(FILE, 0, end, entries)

    store.migrate()
    other = connect()
    other.migrate()
    other.migrate()

    assert other.count() == 2
    assert other.positions() == {FILE: end}
    assert rows(other.query(LogQuery())) == newest_first(entries)


def test_concurrent_migrations_do_not_fail(connect: Callable[[], LogStore]) -> None:
    stores = [connect() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def migrate(store: LogStore) -> None:
        barrier.wait()
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert stores[0].count() == 0


def test_ping_and_count_on_an_empty_store(store: LogStore) -> None:
    store.ping()
    assert store.count() == 0
    assert store.positions() == {}
    assert store.query(LogQuery()) == []


# -- commit_batch -------------------------------------------------------------------------


def test_commit_batch_inserts_and_moves_the_position(store: LogStore) -> None:
    first, middle = batch([at(1), at(2), at(3)])
    second, end = batch([at(4), at(5)], start=middle)

    assert store.commit_batch(FILE, 0, middle, first) == 3
    assert store.positions() == {FILE: middle}
    assert store.commit_batch(FILE, middle, end, second) == 2
    assert store.positions() == {FILE: end}
    assert store.count() == 5

    other_file = "access-2024-05-02.jsonl"
    third, third_end = batch([at(86400)], file=other_file)
    assert store.commit_batch(other_file, 0, third_end, third) == 1
    assert store.positions() == {FILE: end, other_file: third_end}


def test_an_empty_batch_still_moves_the_position(store: LogStore) -> None:
    # Only malformed lines in a chunk: nothing to insert, but the collector must move on.
    assert store.commit_batch(FILE, 0, 300, []) == 0
    assert store.positions() == {FILE: 300}
    assert store.count() == 0


def test_position_conflict_writes_nothing(store: LogStore) -> None:
    entries, end = batch([at(1), at(2)])
    store.commit_batch(FILE, 0, end, entries)
    late, late_end = batch([at(3)], start=end)

    with pytest.raises(PositionConflict):
        store.commit_batch(FILE, 0, late_end, late)  # stored position is `end`, not 0
    with pytest.raises(PositionConflict):
        store.commit_batch(FILE, end + 1, late_end, late)
    with pytest.raises(PositionConflict):  # a file never seen stands at 0
        store.commit_batch("access-2024-05-09.jsonl", 100, 200, late)

    assert store.positions() == {FILE: end}
    assert store.count() == 2
    assert [row.pos for row in store.query(LogQuery())] == [e.pos for e in reversed(entries)]


def test_recommitting_the_same_entries_does_not_duplicate(store: LogStore) -> None:
    entries, end = batch([at(1), at(2), at(3)])
    assert store.commit_batch(FILE, 0, end, entries) == 3
    # The same records again (a replayed batch) and a batch repeating one of its own rows.
    assert store.commit_batch(FILE, end, end + 10, entries) == 0
    assert store.commit_batch(FILE, end + 10, end + 20, [entries[0], entries[0]]) == 0
    fresh = entry(end + 20, at(4))
    assert store.commit_batch(FILE, end + 20, end + 30, [fresh, fresh, entries[1]]) == 1

    assert store.count() == 4
    assert store.positions() == {FILE: end + 30}


def test_only_one_of_racing_collectors_commits_a_batch(connect: Callable[[], LogStore]) -> None:
    stores = [connect() for _ in range(4)]
    stores[0].migrate()
    entries, end = batch([at(i) for i in range(20)])
    barrier = threading.Barrier(len(stores))
    results: list[int | str] = []
    lock = threading.Lock()

    def commit(store: LogStore) -> None:
        barrier.wait()
        try:
            outcome: int | str = store.commit_batch(FILE, 0, end, entries)
        except PositionConflict:
            outcome = "conflict"
        except BaseException as exc:
            outcome = repr(exc)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=commit, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(results, key=str) == [20, "conflict", "conflict", "conflict"]
    assert stores[0].count() == 20
    assert stores[0].positions() == {FILE: end}


def test_positions_of_some_files_only(store: LogStore) -> None:
    """The collector, /ready and /metrics ask for the files they have, not every row."""
    files = [f"access-2024-05-{day:02d}.pod-{pod}.jsonl" for day in (1, 2) for pod in "ab"]
    for n, file in enumerate(files):
        entries, end = batch([at(n)], file=file)
        store.commit_batch(file, 0, end + n, entries)
    assert store.positions([files[1], files[3], "access-2024-05-09.jsonl"]) == {
        files[1]: 101,
        files[3]: 103,
    }
    assert store.positions([]) == {}
    many = [f"access-2024-06-01.pod-{n}.jsonl" for n in range(1200)]  # past any IN limit
    assert store.positions([*many, files[0]]) == {files[0]: 100}
    assert len(store.positions()) == 4


def test_forgotten_positions_are_gone_and_a_reread_doubles_nothing(store: LogStore) -> None:
    old, new = "access-2024-04-01.pod-a.jsonl", "access-2024-05-01.pod-a.jsonl"
    entries, end = batch([at(1), at(2)], file=old)
    store.commit_batch(old, 0, end, entries)
    store.commit_batch(new, 0, 100, batch([at(3)], file=new)[0])
    assert store.forget_positions([old, "access-2024-03-01.jsonl"]) == 1
    assert store.forget_positions([]) == 0
    assert store.positions() == {new: 100}
    # The file turns up again after all: read from its start, nothing is stored twice.
    assert store.commit_batch(old, 0, end, entries) == 0
    assert store.count() == 3


# -- the record count ---------------------------------------------------------------------
#
# count() answers /checkdb without reading the records (a counter in the SQL stores, the
# collection's metadata in MongoDB): after every way records arrive, it must equal a count
# of the records themselves.


def exact_count(url: str) -> int:
    """The records in the database at `url`, counted one by one."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(SQLiteStore.from_url(url).path)) as conn:
            return int(conn.execute("SELECT count(*) FROM logs").fetchone()[0])
    if url.startswith("postgresql"):
        with psycopg.connect(url) as pg:
            row = pg.execute("SELECT count(*) FROM logs").fetchone()
            return int(row[0]) if row else 0
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        return client.get_default_database()["logs"].count_documents({})
    finally:
        client.close()


def sql(url: str, statement: str) -> None:
    """Run one statement on a SQL store's database behind the store's back."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(SQLiteStore.from_url(url).path)) as conn:
            conn.execute(statement)
            conn.commit()
    else:
        with psycopg.connect(url) as pg:
            pg.execute(statement.encode())


def remove_counter(url: str) -> None:
    """Make the database one that was created before the store kept a record counter (and
    so before schema versions)."""
    if not url.startswith("mongodb"):  # MongoDB's count is the server's own metadata
        sql(url, "DROP TABLE logs_count")
        sql(url, "DROP TABLE schema_version")


def commit_in(store: LogStore, file: str, count: int, start: int = 0) -> int:
    """`count` new records at the end of `file` (which stands at `start`); returns the end."""
    entries, end = batch([at(i) for i in range(count)], start=start, file=file)
    assert store.commit_batch(file, start, end, entries) == count
    return end


def test_count_is_exact_after_batches_replays_and_racing_collectors(
    store: LogStore, store_url: str, connect: Callable[[], LogStore]
) -> None:
    entries, end = batch([at(1), at(2), at(3)])
    store.commit_batch(FILE, 0, end, entries)
    assert store.count() == exact_count(store_url) == 3
    # A replayed batch, and one that repeats its own rows: only what is new is counted.
    store.commit_batch(FILE, end, end + 10, entries)
    fresh = entry(end + 10, at(4))
    store.commit_batch(FILE, end + 10, end + 20, [fresh, fresh, entries[0]])
    assert store.count() == exact_count(store_url) == 4
    with pytest.raises(PositionConflict):
        store.commit_batch(FILE, 0, end, [entry(end + 20, at(5))])
    assert store.count() == exact_count(store_url) == 4

    # Collectors of different journal files commit at the same time: no increment is lost.
    stores = [connect() for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def collect(index: int, other: LogStore) -> None:
        file = f"access-2024-05-0{index + 2}.jsonl"
        barrier.wait()
        try:
            offset = 0
            for _ in range(5):
                offset = commit_in(other, file, 10, start=offset)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=collect, args=pair) for pair in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert store.count() == exact_count(store_url) == 4 + 4 * 5 * 10


def test_count_reads_a_counter_not_the_records(
    backend: str, store: LogStore, store_url: str, connect: Callable[[], LogStore]
) -> None:
    if backend == "mongodb":
        pytest.skip("MongoDB's count is its collection metadata, kept by the server")
    commit_in(store, FILE, 2)
    sql(store_url, "UPDATE logs_count SET records = 1000")

    assert store.count() == 1000  # read, not counted: the same cost at any size
    connect().migrate()  # an existing counter is kept: no full count at every start
    assert store.count() == 1000


def test_a_database_from_before_the_counter_is_counted_once_at_migrate(
    store: LogStore, store_url: str, connect: Callable[[], LogStore]
) -> None:
    end = commit_in(store, FILE, 5)
    remove_counter(store_url)

    upgraded = connect()
    upgraded.migrate()
    assert upgraded.count() == exact_count(store_url) == 5
    commit_in(upgraded, FILE, 2, start=end)
    assert upgraded.count() == store.count() == exact_count(store_url) == 7


@pytest.mark.parametrize("counter", ["kept", "from before the counter"])
def test_count_is_exact_after_a_restore(
    store: LogStore, store_url: str, tmp_path: Path, counter: str
) -> None:
    end = commit_in(store, FILE, 5)
    if counter != "kept":
        remove_counter(store_url)
    settings = Settings.from_env(
        {"PHOENIX_HOME": str(tmp_path / "home"), "DB_CONNECTION_STRING": store_url}
    )
    backup = run_backup(settings, clock=lambda: T0 + timedelta(days=1))
    store.migrate()
    commit_in(store, FILE, 3, start=end)  # written after the backup: the restore undoes it
    assert store.count() == 8

    restored = restore_backup(backup.manifest_path, store_url)

    assert restored.records == store.count() == exact_count(store_url) == 5
    assert store.positions() == {FILE: end}
    commit_in(store, FILE, 3, start=end)  # the collector replays from the restored position
    assert store.count() == exact_count(store_url) == 8


# -- query --------------------------------------------------------------------------------


def shuffled_entries(count: int, seed: int = 7) -> list[JournalEntry]:
    """Records whose times repeat (ties broken by pos), with a few statuses and paths."""
    rng = random.Random(seed)
    statuses = (200, 200, 200, 404, 500)
    paths = ("/", "/crash", "/generatecert", "/logs")
    return [
        entry(
            100 * i,
            at(rng.randrange(count // 3 + 1)),
            status=rng.choice(statuses),
            path=rng.choice(paths),
        )
        for i in range(count)
    ]


def commit_shuffled(store: LogStore, entries: list[JournalEntry]) -> None:
    """Commit in several batches, not in time order."""
    shuffled = entries[:]
    random.Random(3).shuffle(shuffled)
    for offset, start in enumerate(range(0, len(shuffled), 7)):
        store.commit_batch(FILE, offset, offset + 1, shuffled[start : start + 7])


def test_query_is_newest_first_with_ties_broken_by_pos(store: LogStore) -> None:
    entries = shuffled_entries(40)
    commit_shuffled(store, entries)

    result = store.query(LogQuery(limit=100))

    assert rows(result) == newest_first(entries)
    assert len({row.record.time for row in result}) < len(result)  # ties were exercised


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 13, 40, 41, 100])
def test_pagination_returns_every_record_exactly_once(store: LogStore, limit: int) -> None:
    entries = shuffled_entries(40)
    commit_shuffled(store, entries)

    result = page_through(store, LogQuery(limit=limit))

    assert rows(result) == newest_first(entries)


def test_limit_is_honoured(store: LogStore) -> None:
    entries = shuffled_entries(12)
    commit_shuffled(store, entries)
    expected = newest_first(entries)

    for limit in (1, 5, 12, 50):
        assert rows(store.query(LogQuery(limit=limit))) == expected[:limit]


FILTERS: dict[str, LogQuery] = {
    "status": LogQuery(status=404),
    "path": LogQuery(path="/crash"),
    "since": LogQuery(since=at(5)),
    "until": LogQuery(until=at(9)),
    "since-until": LogQuery(since=at(3), until=at(9)),
    "status-path": LogQuery(status=200, path="/logs"),
    "all": LogQuery(status=200, path="/", since=at(2), until=at(12)),
    "nothing": LogQuery(status=418),
}


def matches(query: LogQuery, record: AccessRecord) -> bool:
    return (
        (query.status is None or record.status == query.status)
        and (query.path is None or record.path == query.path)
        and (query.since is None or record.time >= query.since)
        and (query.until is None or record.time < query.until)
    )


@pytest.mark.parametrize("name", FILTERS)
def test_filters_alone_and_with_a_cursor(store: LogStore, name: str) -> None:
    entries = shuffled_entries(60)
    commit_shuffled(store, entries)
    query = FILTERS[name]
    expected = [item for item in newest_first(entries) if matches(query, item[1])]

    assert rows(store.query(replace(query, limit=1000))) == expected
    assert rows(page_through(store, replace(query, limit=3))) == expected
    if len(expected) > 2:
        pos, record = expected[1]
        after = store.query(replace(query, limit=1000, before=Cursor(record.time, pos)))
        assert rows(after) == expected[2:]


def test_since_is_inclusive_and_until_exclusive(store: LogStore) -> None:
    entries, end = batch([at(1), at(2), at(3), at(4)])
    store.commit_batch(FILE, 0, end, entries)

    found = store.query(LogQuery(since=at(2), until=at(4)))

    assert [row.record.time for row in found] == [at(3), at(2)]
    assert store.query(LogQuery(since=at(4), until=at(4))) == []


# -- values are data ----------------------------------------------------------------------

ODD = {
    "path": "/caf\u00e9/100%25/%s%d/\u8def\u5f84 with space",
    "query": "q='1'&x=\"2\"&pct=50%&emoji=\U0001f525",
    "user_agent": "Mozilla/5.0 \"quoted\" 'single' back\\slash \U0001f680 tab\tnewline\n",
    "referrer": "https://example.test/?a=1&b=\u00fc\u00df",
    "remote_addr": "::ffff:127.0.0.1",
    "worker": "w\u00f8rker-\u2603",
    "request_id": "\u202eright-to-left",
    "method": "PROPFIND",
}


def test_unicode_and_odd_characters_round_trip_exactly(store: LogStore) -> None:
    odd = entry(0, at(1), status=599, bytes=2**40 + 3, duration_ms=0.1 + 0.2, **ODD)
    plain = entry(100, at(2))
    store.commit_batch(FILE, 0, 200, [odd, plain])

    assert rows(store.query(LogQuery(path=ODD["path"]))) == [(odd.pos, odd.record)]
    assert rows(store.query(LogQuery())) == [(plain.pos, plain.record), (odd.pos, odd.record)]


def test_a_nul_character_does_not_block_the_batch(store: LogStore) -> None:
    # A request for /%00 arrives with a NUL in its decoded path; PostgreSQL text cannot
    # hold one, so a store may replace it, but it must not refuse the batch.
    nul = entry(0, at(1), path="/a\x00b")
    assert store.commit_batch(FILE, 0, 100, [nul]) == 1
    [row] = store.query(LogQuery())
    assert row.record.path in {"/a\x00b", "/a\ufffdb"}
    assert row.record._replace(path=nul.record.path) == nul.record


INJECTIONS = [
    "'; DROP TABLE logs; --",
    "' OR '1'='1",
    '" OR 1=1 --',
    "/%",
    "%",
    "_",
    ".*",
    '{"$ne": null}',
    "$where",
    "\\",
]


def test_injection_looking_filter_values_are_data(store: LogStore) -> None:
    stored = entry(0, at(1), path=INJECTIONS[0])
    others, end = batch([at(2), at(3)], start=100, path="/")
    store.commit_batch(FILE, 0, end, [stored, *others])

    for value in INJECTIONS:
        found = store.query(LogQuery(path=value))
        expected = [(stored.pos, stored.record)] if value == stored.record.path else []
        assert rows(found) == expected, value
    assert store.query(LogQuery(until="' OR '1'='1")) == []  # compared as text: none below
    assert store.count() == 3
    assert store.positions() == {FILE: end}


# -- outages ------------------------------------------------------------------------------


def unreachable_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the database folder should be")
        return f"sqlite:///{blocker / 'phoenix.sqlite'}"
    port = closed_port()
    if backend == "postgresql":
        return f"postgresql://phoenix:{SECRET}@127.0.0.1:{port}/phoenix"
    return (
        f"mongodb://phoenix:{SECRET}@127.0.0.1:{port}/phoenix"
        "?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000"
    )


def test_an_unreachable_database_raises_store_unavailable(backend: str, tmp_path: Path) -> None:
    store = open_store(unreachable_url(backend, tmp_path))  # constructing never fails
    try:
        for operation in (store.migrate, store.ping):
            with pytest.raises(StoreUnavailable) as raised:
                operation()
            assert str(raised.value)
            assert SECRET not in str(raised.value)
    finally:
        store.close()


def test_postgres_wrong_password_is_unavailable_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.url.replace(postgres_server.password, SECRET)
    store = open_store(url)
    try:
        with pytest.raises(StoreUnavailable) as raised:
            store.ping()
        message = str(raised.value)
        assert "authentication failed" in message
        assert SECRET not in message
        assert postgres_server.password not in message
    finally:
        store.close()
