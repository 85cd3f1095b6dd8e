"""What `/checkdb` costs as the store grows: a store of 1 k records against one of 1 M.

Run from the repository root: `.venv/bin/python bench/bench_checkdb.py [--quick]`.

For each backend (SQLite files in a temp folder; PostgreSQL databases in a throw-away
cluster started as the tests start theirs), two stores are filled through `commit_batch`
with synthetic records, 1 k and 1 M, and each is served by its own `phoenix serve`. Each
round makes sequential keep-alive `GET /checkdb` calls to both (the order alternating
between rounds), each call followed by a `GET /health` on the same connection (the same
server's cheapest answer). The figure is p50 `/checkdb` of the large store over that of the
small one, within each round, then the median over rounds: 1 means the same cost at any
size. `SELECT count(*) FROM logs` on the large store is timed alone as well: what every
call paid when `/checkdb` counted the table.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg

from cloud_phoenix.journal import AccessRecord, JournalEntry, format_time, position_key
from cloud_phoenix.store import LogStore, open_store
from report import Row, machine, print_table, say
from servers import BENCH, Server, start_phoenix
from stats import median, percentile, round_ratios, spread

FILL_FILE = "bench-fill.jsonl"  # not a journal name: its positions never meet the server's
BATCH = 10_000
SMALL = 1_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Plan:
    records: int
    rounds: int
    calls: int  # per store and round


FULL = Plan(records=1_000_000, rounds=6, calls=50)
QUICK = Plan(records=50_000, rounds=2, calls=20)


@dataclass(frozen=True, slots=True)
class Sample:
    """Latencies (ms) of the interleaved `/checkdb` and `/health` calls at one size."""

    records: int
    checkdb: list[float]
    health: list[float]


def record(n: int) -> AccessRecord:
    when = format_time(T0 + timedelta(milliseconds=10 * n))
    return AccessRecord(
        when, "GET", f"/p/{n % 13}", "", 200, 512, 1.5, "127.0.0.1", "bench", "", "w1", f"req-{n}"
    )


def fill(store: LogStore, count: int) -> float:
    """Commit `count` synthetic records into an empty store; returns records/s."""
    began = time.perf_counter()
    for first in range(0, count, BATCH):
        last = min(first + BATCH, count)
        entries = [
            JournalEntry(position_key(FILL_FILE, 100 * n), FILL_FILE, 100 * n, record(n))
            for n in range(first, last)
        ]
        store.commit_batch(FILL_FILE, 100 * first, 100 * last, entries)
    return count / (time.perf_counter() - began)


def sample(server: Server, records: int, calls: int) -> Sample:
    checkdb: list[float] = []
    health: list[float] = []
    with httpx.Client(base_url=server.url, timeout=30.0) as client:
        for i in range(calls + 5):  # the first 5 warm the connection up
            began = time.perf_counter()
            answer = client.get("/checkdb")
            middle = time.perf_counter()
            client.get("/health")
            ended = time.perf_counter()
            body = answer.json()
            if answer.status_code != 200 or body["records"] < records:
                raise RuntimeError(f"/checkdb answered {answer.status_code}: {body}")
            if i >= 5:
                checkdb.append((middle - began) * 1000)
                health.append((ended - middle) * 1000)
    return Sample(records, checkdb, health)


# run(statement): one SQL statement on a database, behind the store's back.
Run = Callable[[str], object]


@contextmanager
def sqlite_databases(tmp: Path) -> Iterator[Callable[[str], tuple[str, Run]]]:
    connections: list[sqlite3.Connection] = []

    def database(name: str) -> tuple[str, Run]:
        path = tmp / "sqlite" / f"{name}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
        connections.append(conn)
        return f"sqlite:///{path}", lambda statement: conn.execute(statement).fetchone()

    try:
        yield database
    finally:
        for conn in connections:
            conn.close()


@contextmanager
def postgres_databases(tmp: Path) -> Iterator[Callable[[str], tuple[str, Run]]]:
    sys.path.insert(0, str(BENCH.parent))  # the cluster the tests start, started the same way
    from tests.fixtures.postgres import PostgresServer, find_bindir

    server = PostgresServer(find_bindir())
    connections: list[psycopg.Connection[tuple[object, ...]]] = []

    def database(name: str) -> tuple[str, Run]:
        url = server.create_database(name)
        conn = psycopg.connect(url, autocommit=True)
        connections.append(conn)

        def run(statement: str) -> object:
            cursor = conn.execute(statement.encode())
            return cursor.fetchone() if cursor.description else None

        return url, run

    try:
        server.setup()
        yield database
    finally:
        for conn in connections:
            conn.close()
        server.destroy()


SETTLE = {
    # What the fill leaves for later, done before measuring: the WAL folded into the file,
    # and PostgreSQL's autovacuum pass (visibility map, statistics).
    "sqlite": "PRAGMA wal_checkpoint(TRUNCATE)",
    "postgresql": "VACUUM ANALYZE logs",
}


def measure(backend: str, tmp: Path, plan: Plan) -> Row:
    """Two stores, SMALL and plan.records records, each behind its own `phoenix serve`;
    rounds of `/checkdb` calls to both, back to back, the order alternating."""
    opener = sqlite_databases if backend == "sqlite" else postgres_databases
    servers: list[Server] = []
    stores: list[LogStore] = []
    rates: list[float] = []
    with opener(tmp) as database:
        try:
            runs: list[Run] = []
            for size in (SMALL, plan.records):
                url, run = database(f"store_{size}")
                store = open_store(url)
                stores.append(store)
                store.migrate()
                say(f"{backend}: filling a store with {size:,} records ...")
                rates.append(fill(store, size))
                run(SETTLE[backend])
                runs.append(run)
                home = tmp / f"home-{backend}-{size}"
                servers.append(start_phoenix(home, {"DB_CONNECTION_STRING": url}))
            samples: dict[int, list[Sample]] = {SMALL: [], plan.records: []}
            for round_ in range(plan.rounds):
                order = [0, 1] if round_ % 2 == 0 else [1, 0]
                for index in order:
                    size = (SMALL, plan.records)[index]
                    samples[size].append(sample(servers[index], size, plan.calls))
            counted: list[float] = []
            for _ in range(max(plan.calls // 10, 5)):
                began = time.perf_counter()
                runs[1]("SELECT count(*) FROM logs")
                counted.append((time.perf_counter() - began) * 1000)
        finally:
            for server in servers:
                server.stop()
            for store in stores:
                store.close()
    return report(backend, plan, samples, counted, rates[-1])


def report(
    backend: str, plan: Plan, samples: dict[int, list[Sample]], counted: list[float], rate: float
) -> Row:
    def p50(size: int, field: str) -> list[float]:
        return [percentile(getattr(one, field), 50) for one in samples[size]]

    large, small = p50(plan.records, "checkdb"), p50(SMALL, "checkdb")
    figure = median(round_ratios(large, small))
    everything = [ms for one in samples[plan.records] for ms in one.checkdb]
    return Row(
        f"{backend}: p50 `/checkdb` at {plan.records:,} / at {SMALL:,} records",
        "≤ 1.5",
        f"{figure:.2f}",
        figure <= 1.5,
        f"round ratios {spread(round_ratios(large, small))}; `/checkdb` p50 "
        f"{median(small):.2f} ms at {SMALL:,}, {median(large):.2f} ms at {plan.records:,} "
        f"(p90 {percentile(everything, 90):.2f}); `/health` p50 "
        f"{median(p50(SMALL, 'health')):.2f} / {median(p50(plan.records, 'health')):.2f} ms; "
        f"`SELECT count(*) FROM logs` alone p50 {percentile(counted, 50):.1f} ms at "
        f"{plan.records:,}; {plan.rounds} rounds of {plan.calls} calls per store; "
        f"filled at {rate:,.0f} records/s",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k records: a smoke run")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), action="append", help="default: both"
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    say(machine(f"checkdb bench ({'quick' if args.quick else 'full'})"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp:
        for backend in args.backend or ("sqlite", "postgresql"):
            rows.append(measure(backend, Path(tmp), plan))
    say(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
