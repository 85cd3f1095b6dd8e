"""Schema versions: a database made before versions existed is upgraded in place, records
intact; migrations run in order, once, and a rolled-back phoenix still runs on a newer one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cloud_phoenix.journal import AccessRecord
from cloud_phoenix.store import LogQuery, LogStore, open_store
from cloud_phoenix.store import postgres as postgres_store
from cloud_phoenix.store import sqlite as sqlite_store
from cloud_phoenix.store.migrations import Migration, check_migrations, pending

# The schema as the stores created it before versions, verbatim: the databases users have.
OLD_SQLITE = """
CREATE TABLE IF NOT EXISTS logs (
    pos TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    remote_addr TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    referrer TEXT NOT NULL,
    worker TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_time ON logs (time, pos);
CREATE INDEX IF NOT EXISTS logs_status_time ON logs (status, time);
CREATE INDEX IF NOT EXISTS logs_path_time ON logs (path, time);
CREATE TABLE IF NOT EXISTS journal_positions (
    file TEXT PRIMARY KEY,
    "offset" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (time);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time);
CREATE TABLE IF NOT EXISTS logs_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    records INTEGER NOT NULL
);
"""
OLD_POSTGRES = (
    """CREATE TABLE IF NOT EXISTS logs (
        pos TEXT COLLATE "C" PRIMARY KEY,
        time TEXT COLLATE "C" NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        query TEXT NOT NULL,
        status INTEGER NOT NULL,
        bytes BIGINT NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        remote_addr TEXT NOT NULL,
        user_agent TEXT NOT NULL,
        referrer TEXT NOT NULL,
        worker TEXT NOT NULL,
        request_id TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS logs_time ON logs (time, pos)",
    "CREATE INDEX IF NOT EXISTS logs_status_time ON logs (status, time)",
    "CREATE INDEX IF NOT EXISTS logs_path_time ON logs (path, time)",
    """CREATE TABLE IF NOT EXISTS journal_positions (
        file TEXT PRIMARY KEY,
        "offset" BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        id BIGSERIAL PRIMARY KEY,
        time TEXT COLLATE "C" NOT NULL,
        kind TEXT COLLATE "C" NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_time ON events (time, id)",
    "CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time, id)",
    """CREATE TABLE IF NOT EXISTS logs_count (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        records BIGINT NOT NULL
    )""",
)
FILE = "access-2026-12-01.jsonl"
RECORDS = [
    AccessRecord(
        f"2026-12-01T10:00:0{n}.000000Z",
        *("GET", "/", "", 200 + n, 10, 1.5, "127.0.0.1", "test", "", "old:1", f"old-{n}"),
    )
    for n in range(5)
]
ROWS = [(f"2026-12-01:{n * 100:012d}", *record) for n, record in enumerate(RECORDS)]
INSERT = "INSERT INTO logs VALUES (" + ", ".join(["{mark}"] * 13) + ")"


class OldDatabase:
    """A database as the stores left it before versions: its tables, five records, the
    counter and a position; and a way to read its version back."""

    def __init__(self, url: str, execute: Callable[[str, tuple[Any, ...]], list[Any]]) -> None:
        self.url = url
        self.execute = execute

    def version(self) -> int | None:
        rows = self.execute("SELECT version FROM schema_version", ())
        return int(rows[0][0]) if rows else None

    def set_version(self, version: int) -> None:
        self.execute(f"UPDATE schema_version SET version = {int(version)}", ())


def sqlite_database(tmp_path: Path) -> OldDatabase:
    path = tmp_path / "old.sqlite3"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(OLD_SQLITE)
        conn.executemany(INSERT.format(mark="?"), ROWS)
        conn.execute("INSERT INTO logs_count VALUES (1, 5)")
        conn.execute("INSERT INTO journal_positions VALUES (?, ?)", (FILE, 500))

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        with closing(sqlite3.connect(path)) as conn, conn:
            return conn.execute(sql, params).fetchall()

    return OldDatabase(f"sqlite:///{path}", execute)


def postgres_database(url: str) -> OldDatabase:
    with psycopg.connect(url) as conn:
        for statement in OLD_POSTGRES:
            conn.execute(statement)
        with conn.cursor() as cursor:
            cursor.executemany(INSERT.format(mark="%s"), ROWS)
        conn.execute("INSERT INTO logs_count VALUES (1, 5)")
        conn.execute("INSERT INTO journal_positions VALUES (%s, %s)", (FILE, 500))

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        with psycopg.connect(url) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    return OldDatabase(url, execute)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def old(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OldDatabase]:
    if request.param == "sqlite":
        yield sqlite_database(tmp_path)
    else:
        yield postgres_database(request.getfixturevalue("postgres_db_url"))


def latest(store: LogStore) -> int:
    module = sqlite_store if store.backend == "sqlite" else postgres_store
    version: int = module.MIGRATIONS[-1].version
    return version


def test_a_database_from_before_versions_is_upgraded_in_place_records_intact(
    old: OldDatabase,
) -> None:
    store = open_store(old.url)
    try:
        store.migrate()
        assert old.version() == latest(store)
        assert [row.record for row in store.query(LogQuery())] == RECORDS[::-1]
        assert [row.pos for row in store.query(LogQuery())] == [row[0] for row in ROWS[::-1]]
        assert store.count() == 5
        assert store.positions() == {FILE: 500}
        if store.backend == "sqlite":  # version 2: path with status from one index
            assert old.execute(
                "SELECT name FROM sqlite_master WHERE name = 'logs_path_status_time'", ()
            )
        store.migrate()  # again: nothing left to do
        assert old.version() == latest(store)
        assert store.count() == 5
    finally:
        store.close()


def test_migrations_run_in_order_once_each_and_record_the_version(
    old: OldDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(old.url)
    module = sqlite_store if store.backend == "sqlite" else postgres_store
    try:
        store.migrate()
        base = latest(store)
        # Two further steps; the second needs the first (its column), so order matters.
        later = (
            Migration(base + 1, "a column", ("ALTER TABLE events ADD COLUMN origin TEXT",)),
            Migration(base + 2, "its index", ("CREATE INDEX events_origin ON events (origin)",)),
        )
        monkeypatch.setattr(module, "MIGRATIONS", (*module.MIGRATIONS, *later))
        store.migrate()
        assert old.version() == base + 2
        store.migrate()  # a second run would fail on ADD COLUMN: it must not run again
        assert old.version() == base + 2
        assert store.count() == 5
    finally:
        store.close()


def test_a_rolled_back_phoenix_runs_on_the_newer_schema(old: OldDatabase) -> None:
    store = open_store(old.url)
    try:
        store.migrate()
        old.set_version(latest(store) + 3)  # as a newer phoenix left it
        store.migrate()  # no error, nothing undone
        assert old.version() == latest(store) + 3
        assert store.count() == 5
    finally:
        store.close()


def test_pending_is_what_comes_after_the_current_version_in_order() -> None:
    steps = check_migrations([Migration(n, f"step {n}", ()) for n in (1, 2, 3)])
    assert [m.version for m in pending(0, steps)] == [1, 2, 3]
    assert [m.version for m in pending(2, steps)] == [3]
    assert pending(3, steps) == []
    assert pending(7, steps) == []  # a newer database: nothing to do, nothing refused


@pytest.mark.parametrize("versions", [(2,), (1, 3), (2, 1), (1, 1)])
def test_migration_versions_must_be_1_2_3_in_order(versions: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="1, 2, 3"):
        check_migrations([Migration(n, "step", ()) for n in versions])
