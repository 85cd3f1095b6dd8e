"""The `logs` table each SQL store creates, read back from a real database.

The columns are derived from journal.AccessRecord; they are pinned here because a database
made by an earlier version keeps its table (CREATE TABLE IF NOT EXISTS): a change of the
record's fields needs a migration, and this is where a change of them shows first.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from cloud_phoenix.journal import RECORD_FIELDS
from cloud_phoenix.store import open_store


def test_the_sqlite_logs_table_is_the_journal_position_and_the_records_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "phoenix.sqlite3"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    with closing(sqlite3.connect(path)) as conn:
        columns = conn.execute("PRAGMA table_info(logs)").fetchall()
    # (name, declared type, NOT NULL, part of the primary key)
    assert [(c[1], c[2], c[3], c[5]) for c in columns] == [
        ("pos", "TEXT", 0, 1),
        ("time", "TEXT", 1, 0),
        ("method", "TEXT", 1, 0),
        ("path", "TEXT", 1, 0),
        ("query", "TEXT", 1, 0),
        ("status", "INTEGER", 1, 0),
        ("bytes", "INTEGER", 1, 0),
        ("duration_ms", "REAL", 1, 0),
        ("remote_addr", "TEXT", 1, 0),
        ("user_agent", "TEXT", 1, 0),
        ("referrer", "TEXT", 1, 0),
        ("worker", "TEXT", 1, 0),
        ("request_id", "TEXT", 1, 0),
    ]
    assert tuple(c[1] for c in columns) == ("pos", *RECORD_FIELDS)


@pytest.mark.integration
def test_the_postgres_logs_table_is_the_journal_position_and_the_records_fields(
    postgres_db_url: str,
) -> None:
    store = open_store(postgres_db_url)
    store.migrate()
    store.close()
    with psycopg.connect(postgres_db_url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, collation_name "
            "FROM information_schema.columns WHERE table_name = 'logs' ORDER BY ordinal_position"
        ).fetchall()
    assert columns == [
        ("pos", "text", "NO", "C"),
        ("time", "text", "NO", "C"),
        ("method", "text", "NO", None),
        ("path", "text", "NO", None),
        ("query", "text", "NO", None),
        ("status", "integer", "NO", None),
        ("bytes", "bigint", "NO", None),
        ("duration_ms", "double precision", "NO", None),
        ("remote_addr", "text", "NO", None),
        ("user_agent", "text", "NO", None),
        ("referrer", "text", "NO", None),
        ("worker", "text", "NO", None),
        ("request_id", "text", "NO", None),
    ]
