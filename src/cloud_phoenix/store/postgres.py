"""The PostgreSQL store: the `logs` and `events` tables behind a psycopg 3 connection pool.

`time` is kept as TEXT in `format_time`'s fixed-width UTC form, and `time` and `pos` use
the "C" collation: byte order is then time order, exactly as in SQLite, so ORDER BY, the
since/until filters, the cursors and the shared `where_clause` behave identically in every
store, with no conversion of values on the way in or out (a timestamptz would need both,
and a locale collation could order punctuation differently from SQLite's BINARY).

An event's `data` is JSON kept as TEXT, not JSONB: JSONB refuses a NUL in a string and
rewrites numbers (1e+16 comes back as an integer), and the dict must come back as stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool, PoolTimeout

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
from cloud_phoenix.store.sqlite import NO_COUNTER, events_where, where_clause
from cloud_phoenix.store.urls import (
    POSTGRES_SCHEMES,
    redact_url,
    scrub,
    url_problem,
    url_scheme,
    url_secrets,
)

Connection = psycopg.Connection[TupleRow]

# The `logs` columns: the journal position, then the record's fields (journal.AccessRecord)
# in its order, each of the SQL type of its Python type; `bytes` is a bigint (a response
# may be larger than 2 GiB), `pos` and `time` sort by the "C" collation (see above).
_FIELDS = ("pos", *RECORD_FIELDS)
_COLUMNS = ", ".join(_FIELDS)
_KINDS: dict[str, type] = {"pos": str, **RECORD_TYPES}
_SQL_TYPES = {str: "text", int: "integer", float: "double precision"}
# Each column's SQL type.
_TYPES = {name: _SQL_TYPES[_KINDS[name]] for name in _FIELDS} | {"bytes": "bigint"}
_C_COLLATED = {"pos", "time"}


def _column(name: str) -> str:
    collate = ' COLLATE "C"' if name in _C_COLLATED else ""
    constraint = "PRIMARY KEY" if name == "pos" else "NOT NULL"
    return f"{name} {_TYPES[name].upper()}{collate} {constraint}"


# Version 1: the schema as it was before versions (store.migrations).
_SCHEMA_1 = (
    "CREATE TABLE IF NOT EXISTS logs (\n        "
    + ",\n        ".join(_column(name) for name in _FIELDS)
    + "\n    )",
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
    # `id` last: the newest-first read (time, then id, descending) is then an index scan.
    "CREATE INDEX IF NOT EXISTS events_time ON events (time, id)",
    "CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time, id)",
    # How many rows `logs` holds. commit_batch adds what it inserted as the last statement
    # of the batch's transaction: collectors of other files wait on this row only for a commit.
    """CREATE TABLE IF NOT EXISTS logs_count (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        records BIGINT NOT NULL
    )""",
)
MIGRATIONS = check_migrations((Migration(1, "the schema before versions", _SCHEMA_1),))

# Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog (unique violation on
# pg_type): every migrating process takes this lock first. The number spells "phoenix".
_MIGRATE_LOCK = 0x70686F656E6978

# A batch is copied into `logs` (COPY is the server's fastest way in), inside a savepoint.
# COPY knows no ON CONFLICT: should a record be stored already (a replay) or a text hold a
# NUL, the savepoint is rolled back and the batch goes through a temporary table, cleaned,
# with INSERT ... ON CONFLICT DO NOTHING, which skips what is stored. Both are inside the
# batch's transaction.
_COPY = f"COPY logs ({_COLUMNS}) FROM STDIN"
_BATCH_TABLE = "CREATE TEMPORARY TABLE logs_batch (LIKE logs) ON COMMIT DROP"
_COPY_BATCH = f"COPY logs_batch ({_COLUMNS}) FROM STDIN"
_INSERT_BATCH = (
    f"INSERT INTO logs ({_COLUMNS}) SELECT {_COLUMNS} FROM logs_batch "  # noqa: S608 - fixed
    "ON CONFLICT (pos) DO NOTHING"
)
_SET_VERSION = (
    "INSERT INTO schema_version (id, version) VALUES (1, %s) "
    "ON CONFLICT (id) DO UPDATE SET version = excluded.version"
)
_SELECT_POSITION = 'SELECT "offset" FROM journal_positions WHERE file = %s FOR UPDATE'
_ADD_RECORDS = "UPDATE logs_count SET records = records + %s WHERE id = 1"
_RECOUNT = (
    "INSERT INTO logs_count (id, records) SELECT 1, count(*) FROM logs "
    "ON CONFLICT (id) DO UPDATE SET records = excluded.records"
)


class PostgresStore:
    """Records in PostgreSQL; any number of app workers and collectors may share it."""

    backend = "postgresql"

    def __init__(
        self, url: str, timeout: float = 5.0, connect_timeout: int = 5, max_connections: int = 4
    ) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        problem = url_problem(url)
        if problem:
            raise StoreError(f"the PostgreSQL URL is refused: {problem}")
        self._conninfo = _conninfo(url, connect_timeout)
        # Every message names the server by this, never by the URL (it holds the password).
        self.where = f"PostgreSQL at {redact_url(url)}"
        self._secrets = url_secrets(url)
        self._pool: ConnectionPool[Connection] | None = None
        self._lock = threading.Lock()
        # Set when the server was found unreachable: until a direct connection succeeds again,
        # callers get StoreUnavailable at once instead of each waiting out the pool timeout.
        self._down = False
        # Set when a batch held records already stored: the batches that follow go the way
        # that skips them (a replay goes on for a while), until one holds only new records.
        self._replaying = False

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        if url_scheme(url) not in POSTGRES_SCHEMES:
            raise StoreError("a PostgreSQL URL starts with postgresql:// or postgres://")
        return cls(url)

    def _get_pool(self) -> ConnectionPool[Connection]:
        # Opened on first use, not in __init__: constructing never blocks nor fails while the
        # database is down, and no pool thread exists yet when a server forks its workers.
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self.max_connections,
                    open=True,
                    name="cloud-phoenix",
                    timeout=self.timeout,
                    # Connections broken by a server restart are replaced before use,
                    # and a failed reconnection is given up soon so a new one starts
                    # promptly once the server is back.
                    check=ConnectionPool.check_connection,
                    reconnect_timeout=10.0,
                )
            return self._pool

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A pooled connection inside one transaction: committed on exit, rolled back on error."""
        if self._down:
            self._probe()
        try:
            with self._get_pool().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            self._down = True
            raise StoreUnavailable(self._diagnose()) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._down = True
            raise StoreUnavailable(f"{self.where} is unavailable: {self._scrub(exc)}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: {self._scrub(exc)}") from exc

    def _probe(self) -> None:
        """One direct connection: raise StoreUnavailable at once if the server is still away."""
        try:
            with psycopg.connect(self._conninfo, connect_timeout=2):
                pass
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.where} is unavailable: {self._scrub(exc)}") from exc
        self._down = False

    def _diagnose(self) -> str:
        """Why the pool gave no connection in time: one direct attempt tells down from busy."""
        try:
            with psycopg.connect(self._conninfo, connect_timeout=2):
                pass
        except psycopg.Error as exc:
            # libpq's message already says what to check (refused, timed out, bad password).
            return f"{self.where} is unavailable: {self._scrub(exc)}"
        return (
            f"{self.where} answers, but no pooled connection was free within "
            f"{self.timeout:g} s: every connection is busy"
        )

    def _scrub(self, exc: BaseException) -> str:
        # libpq does not echo passwords, but a malformed URL can end up quoted in a message.
        return scrub(str(exc), self._secrets)

    def migrate(self) -> None:
        with self._transaction() as conn:
            create_schema(conn)

    def ping(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT 1").fetchone()

    def positions(self, files: Collection[str] | None = None) -> dict[str, int]:
        with self._transaction() as conn:
            if files is None:
                rows = conn.execute('SELECT file, "offset" FROM journal_positions').fetchall()
            else:
                rows = conn.execute(
                    'SELECT file, "offset" FROM journal_positions WHERE file = ANY(%s)',
                    (list(files),),
                ).fetchall()
        return {str(file): int(offset) for file, offset in rows}

    def forget_positions(self, files: Collection[str]) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM journal_positions WHERE file = ANY(%s)",
                (list(files),),
            )
        return max(cursor.rowcount, 0)

    def commit_batch(self, file: str, start: int, end: int, entries: Sequence[JournalEntry]) -> int:
        with self._transaction() as conn:
            row = conn.execute(_SELECT_POSITION, (file,)).fetchone()
            if row is None and start == 0:
                # First batch of this file: create its row, unless a concurrent collector
                # just did (ON CONFLICT waits for it), in which case lock and read that one.
                created = conn.execute(
                    'INSERT INTO journal_positions (file, "offset") VALUES (%s, 0) '
                    'ON CONFLICT (file) DO NOTHING RETURNING "offset"',
                    (file,),
                ).fetchone()
                row = created or conn.execute(_SELECT_POSITION, (file,)).fetchone()
            current = int(row[0]) if row else 0
            if current != start:
                # Raising inside the transaction rolls it back: nothing is written.
                raise PositionConflict(
                    f"{file}: stored position is {current}, batch starts at {start}"
                )
            inserted = self._insert(conn, entries) if entries else 0
            conn.execute('UPDATE journal_positions SET "offset" = %s WHERE file = %s', (end, file))
            if inserted and conn.execute(_ADD_RECORDS, (inserted,)).rowcount != 1:
                raise StoreError(f"{self.where}: {NO_COUNTER}")
        return inserted

    def _insert(self, conn: Connection, entries: Sequence[JournalEntry]) -> int:
        """Insert the records not stored yet, in `conn`'s transaction; returns how many."""
        if not self._replaying:
            try:
                with conn.transaction(), conn.cursor().copy(_COPY) as copy:  # a savepoint
                    for entry in entries:
                        copy.write_row((entry.pos, *entry.record))
                return len(entries)  # all of them: COPY fails at the first duplicate
            except psycopg.errors.UniqueViolation:
                self._replaying = True
            except psycopg.DataError:
                pass  # a NUL, which text cannot hold (psycopg refuses it before sending)
        conn.execute(_BATCH_TABLE)
        with conn.cursor().copy(_COPY_BATCH) as copy:
            for entry in entries:
                copy.write_row(_values(entry))
        inserted = max(conn.execute(_INSERT_BATCH).rowcount, 0)
        conn.execute("DROP TABLE logs_batch")  # not left to the commit: one batch may follow
        if inserted == len(entries):
            self._replaying = False
        return inserted

    def query(self, query: LogQuery) -> list[LogRow]:
        where, params = where_clause(query, "%s")
        sql = (
            f"SELECT {_COLUMNS} FROM logs{where} "  # noqa: S608 - built from fixed parts
            "ORDER BY time DESC, pos DESC LIMIT %s"
        )
        clean = [_text(value) if isinstance(value, str) else value for value in params]
        with self._transaction() as conn:
            rows = conn.execute(sql, [*clean, query.limit]).fetchall()
        return [LogRow(str(row[0]), AccessRecord(*row[1:])) for row in rows]

    def count(self) -> int:
        with self._transaction() as conn:
            row = conn.execute("SELECT records FROM logs_count WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"{self.where}: {NO_COUNTER}")
        return int(row[0])

    def add_event(self, event: Event) -> None:
        stored, data = prepare_event(event)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO events (time, kind, message, data) VALUES (%s, %s, %s, %s)",
                (stored.time, _text(stored.kind), _text(stored.message), data),
            )

    def events(
        self, limit: int = 50, kind: str | None = None, since: str | None = None
    ) -> list[Event]:
        check_events_limit(limit)
        where, params = events_where(kind, since, "%s")
        sql = (
            f"SELECT time, kind, message, data FROM events{where} "  # noqa: S608 - fixed parts
            "ORDER BY time DESC, id DESC LIMIT %s"
        )
        clean = [_text(value) if isinstance(value, str) else value for value in params]
        with self._transaction() as conn:
            rows = conn.execute(sql, [*clean, limit]).fetchall()
        return [Event(str(r[0]), str(r[1]), str(r[2]), event_data(str(r[3]))) for r in rows]

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


def create_schema(conn: psycopg.Connection[Any], *, recount: bool = False) -> None:
    """Bring the schema to its latest version (MIGRATIONS) inside `conn`'s transaction,
    under the migration lock: one process migrates, the others then find nothing to do.

    The record counter is counted from `logs` when it is new (a new database, or one from
    before the counter) or when `recount` asks: a restore may leave it off.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
    conn.execute(VERSION_TABLE)
    row = conn.execute(READ_VERSION).fetchone()
    for migration in pending(int(row[0]) if row else 0, MIGRATIONS):
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(_SET_VERSION, (migration.version,))
    if recount or conn.execute("SELECT 1 FROM logs_count WHERE id = 1").fetchone() is None:
        # SHARE waits for the batches in flight and holds new ones off until this commits,
        # so the count is exact; the next statement's snapshot sees every committed row.
        conn.execute("LOCK TABLE logs IN SHARE MODE")
        conn.execute(_RECOUNT)


def _conninfo(url: str, connect_timeout: int) -> str:
    """The libpq connection string, with a short connect timeout unless the URL sets one."""
    try:
        params = pg_conninfo.conninfo_to_dict(url)
    except (psycopg.ProgrammingError, ValueError):  # ValueError: bytes not UTF-8
        # The message would quote the URL, password included: say what is expected instead.
        raise StoreError(
            "cannot read the PostgreSQL URL: expected postgresql://user:password@host:port/database"
        ) from None
    params.setdefault("connect_timeout", connect_timeout)
    params.setdefault("application_name", "cloud-phoenix")
    return pg_conninfo.make_conninfo("", **params)


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and a request for /%00 puts one in the path: replace
    # it rather than fail the batch, which would stall the collector on that record forever.
    return value.replace("\x00", "\ufffd")


# How each column's value is sent: text without NUL, numbers as their own type.
_SENT: tuple[Callable[[Any], object], ...] = tuple(
    _text if _KINDS[name] is str else _KINDS[name] for name in _FIELDS
)


def _values(entry: JournalEntry) -> tuple[object, ...]:
    """The row of `entry`, in the columns' order (_FIELDS)."""
    return tuple(send(value) for send, value in zip(_SENT, (entry.pos, *entry.record), strict=True))
