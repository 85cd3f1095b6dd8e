"""The default store: one SQLite file in WAL mode, a connection per thread."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from cloud_phoenix.journal import RECORD_FIELDS, RECORD_TYPES, AccessRecord, JournalEntry
from cloud_phoenix.store.base import (
    Event,
    LogQuery,
    LogRow,
    PositionConflict,
    StoreError,
    StoreUnavailable,
    check_events_limit,
    event_data,
    prepare_event,
)
from cloud_phoenix.store.migrations import (
    READ_VERSION,
    VERSION_TABLE,
    Migration,
    check_migrations,
    pending,
)

# The `logs` columns are the record's fields (journal.AccessRecord), in its order, typed so.
_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}
_RECORD_COLUMNS = ",\n    ".join(
    f"{name} {_SQL_TYPES[RECORD_TYPES[name]]} NOT NULL" for name in RECORD_FIELDS
)

# Version 1: the schema as it was before versions (store.migrations).
_SCHEMA_1 = (
    f"""CREATE TABLE IF NOT EXISTS logs (
    pos TEXT PRIMARY KEY,
    {_RECORD_COLUMNS}
)""",
    "CREATE INDEX IF NOT EXISTS logs_time ON logs (time, pos)",
    "CREATE INDEX IF NOT EXISTS logs_status_time ON logs (status, time)",
    "CREATE INDEX IF NOT EXISTS logs_path_time ON logs (path, time)",
    """CREATE TABLE IF NOT EXISTS journal_positions (
    file TEXT PRIMARY KEY,
    "offset" INTEGER NOT NULL
)""",
    # AUTOINCREMENT: an id is never reused, even after old events are pruned, so it stays
    # the insertion order that breaks ties between events of the same time.
    """CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS events_time ON events (time)",
    "CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time)",
    # How many rows `logs` holds: commit_batch adds what it inserted, in the batch's
    # transaction.
    """CREATE TABLE IF NOT EXISTS logs_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    records INTEGER NOT NULL
)""",
)
MIGRATIONS = check_migrations(
    (
        Migration(1, "the schema before versions", _SCHEMA_1),
        # SQLite answers `path` with `status` from one of the two indexes, filtering the other
        # column row by row: 70-80 ms for a page of /logs?path=/logs&status=503 at 100 k as at
        # 10 M records, against 3.4 ms on PostgreSQL, which combines both (bench_logs_scale).
        Migration(
            2,
            "an index for path and status together",
            ("CREATE INDEX IF NOT EXISTS logs_path_status_time ON logs (path, status, time)",),
        ),
    )
)

_COLUMNS = ", ".join(("pos", *RECORD_FIELDS))
_INSERT = (
    f"INSERT OR IGNORE INTO logs ({_COLUMNS}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * (len(RECORD_FIELDS) + 1))})"
)
_ADD_RECORDS = "UPDATE logs_count SET records = records + ? WHERE id = 1"
_RECOUNT = "INSERT OR REPLACE INTO logs_count (id, records) SELECT 1, count(*) FROM logs"
_POSITIONS = 'SELECT file, "offset" FROM journal_positions'
_MAX_PARAMETERS = 500
_SET_VERSION = (
    "INSERT INTO schema_version (id, version) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET version = excluded.version"
)
NO_COUNTER = "the record counter (table logs_count) is missing: run migrate first"


def where_clause(query: LogQuery, placeholder: str) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters) shared by the SQL stores."""
    clauses: list[str] = []
    params: list[object] = []
    if query.status is not None:
        clauses.append(f"status = {placeholder}")
        params.append(query.status)
    if query.path is not None:
        clauses.append(f"path = {placeholder}")
        params.append(query.path)
    if query.since is not None:
        clauses.append(f"time >= {placeholder}")
        params.append(query.since)
    if query.until is not None:
        clauses.append(f"time < {placeholder}")
        params.append(query.until)
    if query.before is not None:
        # (time, pos) < the cursor's, spelt so that `time <= ?` bounds the read of any of
        # the indexes: as an OR alone it is a filter, and both databases then read from the
        # newest record down to the cursor, a page 5 M records deep 5 M entries long.
        clauses.append(f"time <= {placeholder} AND (time < {placeholder} OR pos < {placeholder})")
        params.extend([query.before.time, query.before.time, query.before.pos])
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def events_where(kind: str | None, since: str | None, placeholder: str) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters) of an events read, shared by the SQL stores."""
    clauses: list[str] = []
    params: list[object] = []
    if kind is not None:
        clauses.append(f"kind = {placeholder}")
        params.append(kind)
    if since is not None:
        clauses.append(f"time >= {placeholder}")
        params.append(since)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class SQLiteStore:
    """Records in a SQLite file; several processes may share it (WAL, busy timeout)."""

    backend = "sqlite"

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        rest = url.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise StoreError(
                "a SQLite URL names a file: sqlite:///relative/path or sqlite:////absolute/path"
            )
        path = Path(rest[1:].split("?", 1)[0])
        if str(path) == ":memory:":
            raise StoreError(
                "sqlite:///:memory: cannot be shared by the app and the collector: name a file"
            )
        return cls(path)

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            _enable_wal(conn, self.timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "locked" in message or "unable to open" in message or "readonly" in message:
                raise StoreUnavailable(f"SQLite database {self.path}: {message}") from exc
            raise StoreError(f"SQLite database {self.path}: {message}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite database {self.path}: {exc}") from exc

    def migrate(self) -> None:
        with self._errors() as conn:
            create_schema(conn)

    def ping(self) -> None:
        with self._errors() as conn:
            conn.execute("SELECT 1").fetchone()

    def positions(self, files: Collection[str] | None = None) -> dict[str, int]:
        with self._errors() as conn:
            if files is None:
                rows = conn.execute(_POSITIONS).fetchall()
            else:
                rows = [
                    row
                    for names in _slices(files)
                    for row in conn.execute(_POSITIONS + _file_in(names), names).fetchall()
                ]
        return {str(file): int(offset) for file, offset in rows}

    def forget_positions(self, files: Collection[str]) -> int:
        forgotten = 0
        with self._errors() as conn:
            for names in _slices(files):
                sql = "DELETE FROM journal_positions" + _file_in(names)  # noqa: S608 - marks only
                forgotten += conn.execute(sql, names).rowcount
        return forgotten

    def commit_batch(self, file: str, start: int, end: int, entries: Sequence[JournalEntry]) -> int:
        with self._errors() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    'SELECT "offset" FROM journal_positions WHERE file = ?', (file,)
                ).fetchone()
                current = int(row[0]) if row else 0
                if current != start:
                    raise PositionConflict(
                        f"{file}: stored position is {current}, batch starts at {start}"
                    )
                before = conn.total_changes
                conn.executemany(_INSERT, [_values(entry) for entry in entries])
                inserted = conn.total_changes - before  # INSERT OR IGNORE: the new rows only
                if inserted and conn.execute(_ADD_RECORDS, (inserted,)).rowcount != 1:
                    raise StoreError(f"SQLite database {self.path}: {NO_COUNTER}")
                conn.execute(
                    'INSERT INTO journal_positions (file, "offset") VALUES (?, ?) '
                    'ON CONFLICT (file) DO UPDATE SET "offset" = excluded."offset"',
                    (file, end),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return inserted

    def query(self, query: LogQuery) -> list[LogRow]:
        where, params = where_clause(query, "?")
        sql = (
            f"SELECT {_COLUMNS} FROM logs{where} "  # noqa: S608 - built from fixed parts
            "ORDER BY time DESC, pos DESC LIMIT ?"
        )
        with self._errors() as conn:
            rows = conn.execute(sql, [*params, query.limit]).fetchall()
        return [LogRow(row[0], AccessRecord(*row[1:])) for row in rows]

    def count(self) -> int:
        with self._errors() as conn:
            row = conn.execute("SELECT records FROM logs_count WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"SQLite database {self.path}: {NO_COUNTER}")
        return int(row[0])

    def add_event(self, event: Event) -> None:
        stored, data = prepare_event(event)
        with self._errors() as conn:
            conn.execute(
                "INSERT INTO events (time, kind, message, data) VALUES (?, ?, ?, ?)",
                (stored.time, stored.kind, stored.message, data),
            )

    def events(
        self, limit: int = 50, kind: str | None = None, since: str | None = None
    ) -> list[Event]:
        check_events_limit(limit)
        where, params = events_where(kind, since, "?")
        # The rowid `id` is in every index, so (time) and (kind, time) serve this order whole.
        sql = (
            f"SELECT time, kind, message, data FROM events{where} "  # noqa: S608 - fixed parts
            "ORDER BY time DESC, id DESC LIMIT ?"
        )
        with self._errors() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [Event(row[0], row[1], row[2], event_data(row[3])) for row in rows]

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def create_schema(conn: sqlite3.Connection, *, recount: bool = False) -> None:
    """Bring the schema to its latest version (MIGRATIONS), in one write transaction, which
    excludes every other migrating process and every collector.

    The record counter is counted from `logs` when it is new (a new database, or one from
    before the counter) or when `recount` asks: a restored copy may lack it or be off.
    `conn` is in autocommit mode (isolation_level None).
    """
    try:
        # BEGIN inside the script: executescript commits a transaction begun before it.
        conn.executescript(f"BEGIN IMMEDIATE; {VERSION_TABLE};")
        row = conn.execute(READ_VERSION).fetchone()
        for migration in pending(int(row[0]) if row else 0, MIGRATIONS):
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(_SET_VERSION, (migration.version,))
        if recount or conn.execute("SELECT 1 FROM logs_count WHERE id = 1").fetchone() is None:
            conn.execute(_RECOUNT)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the file to WAL (persistent). Switching takes an exclusive lock that SQLite's
    busy handler does not wait for, so several processes opening a new file retry here."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _slices(files: Collection[str]) -> Iterator[list[str]]:
    """`files` in slices of at most _MAX_PARAMETERS (SQLite before 3.32 takes 999 at most)."""
    names = list(files)
    for start in range(0, len(names), _MAX_PARAMETERS):
        yield names[start : start + _MAX_PARAMETERS]


def _file_in(names: list[str]) -> str:
    return f" WHERE file IN ({', '.join('?' * len(names))})"


def _values(entry: JournalEntry) -> tuple[object, ...]:
    return (entry.pos, *entry.record)  # the columns' order is the record's (RECORD_FIELDS)
