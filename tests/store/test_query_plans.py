"""A page after a cursor is an index range that starts at the cursor, in both SQL stores:
read from the newest record down, a page deep in 10 M records would cost the depth."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from cloud_phoenix.store import Cursor, LogQuery, open_store
from cloud_phoenix.store.sqlite import where_clause

CURSOR = Cursor("2026-12-01T10:00:00.000000Z", "2026-12-01:000000001000")
QUERIES = {
    "cursor": LogQuery(limit=1000, before=CURSOR),
    "status": LogQuery(status=500, before=CURSOR),
    "path": LogQuery(path="/logs", before=CURSOR),
    "path and status": LogQuery(path="/logs", status=500, before=CURSOR),
}


def select(query: LogQuery, placeholder: str) -> tuple[str, list[object]]:
    where, params = where_clause(query, placeholder)
    sql = f"SELECT * FROM logs{where} ORDER BY time DESC, pos DESC LIMIT {query.limit}"
    return sql, params


@pytest.mark.parametrize("name", QUERIES)
def test_sqlite_searches_from_the_cursor(tmp_path: Path, name: str) -> None:
    path = tmp_path / "plans.sqlite3"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    sql, params = select(QUERIES[name], "?")
    with closing(sqlite3.connect(path)) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    # "SEARCH ... USING INDEX logs_time (time<?)": a range that ends at the cursor;
    # "SCAN logs USING INDEX logs_time" would read every newer record first.
    assert any(step.startswith("SEARCH") and "time<?" in step for step in plan), plan


@pytest.mark.integration
@pytest.mark.parametrize("name", QUERIES)
def test_postgres_bounds_the_index_scan_at_the_cursor(postgres_db_url: str, name: str) -> None:
    store = open_store(postgres_db_url)
    store.migrate()
    store.close()
    sql, params = select(QUERIES[name], "%s")
    with psycopg.connect(postgres_db_url) as conn:
        conn.execute("SET enable_seqscan = off")  # an empty table: make the index plan show
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", params))
    conditions = [line for line in plan.splitlines() if "Index Cond" in line]
    assert any('"time" <=' in line for line in conditions), plan


def test_sqlite_answers_path_with_status_from_one_index(tmp_path: Path) -> None:
    """Migration 2: one index reads only the rows of that path and status."""
    path = tmp_path / "plans.sqlite3"
    store = open_store(f"sqlite:///{path}")
    store.migrate()
    store.close()
    sql, params = select(LogQuery(path="/logs", status=503), "?")
    with closing(sqlite3.connect(path)) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert any("logs_path_status_time (path=? AND status=?)" in step for step in plan), plan
