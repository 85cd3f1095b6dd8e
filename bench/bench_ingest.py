"""Ingest: the collector's records/s into each store against the store's own bulk ceiling,
measured in the same run, and how long the stack's collector takes to catch up after a flood.

Run from the repository root: `.venv/bin/python bench/bench_ingest.py [--quick]`.

1. Records/s of the collector (`Collector.collect_once`, as `phoenix collect --once` runs it)
   taking one journal of N lines into an empty store, against the store's raw bulk ceiling:
   the same rows, already parsed, into the same schema and indexes, in one transaction
   (SQLite `executemany`, PostgreSQL one `COPY`, MongoDB `insert_many(ordered=False)`).
   The collector with fixed 500-record batches (the batch size before it adapted) is
   measured in the same rounds. Each side runs in a fresh process of its own, on a fresh
   database; the rounds rotate the order of the sides; the figure is the median of the
   ratios within rounds.
2. The catch-up after a flood: `phoenix up` (2 workers, HAProxy) on the store, `wrk -t1
   -c32` on `GET /` for 60 s, then the seconds from the end of the flood until the store
   holds the whole journal (every journal file's position at its size).

SQLite and PostgreSQL always (PostgreSQL: a throw-away cluster started as the tests start
theirs: loopback only, fsync off); MongoDB where PHOENIX_TEST_MONGODB_URL names a server.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.journal import (
    TimeFormatter,
    file_name,
    journal_files,
    journal_line,
    read_chunk,
)
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.store import LogStore, open_store
from report import Row, machine, print_table, say
from stack import start_stack
from stats import median, round_ratios, spread
from wrk import ensure_wrk, run_wrk

MONGO_ENV = "PHOENIX_TEST_MONGODB_URL"
URL_ENV = "BENCH_DB_URL"  # the worker's database URL: not on a command line (`ps` shows it)
FIXED_BATCH = 500  # the collector's batch before it adapted (PHOENIX_COLLECT_BATCH default)
WORKERS = 2
REPOSITORY = Path(__file__).resolve().parents[1]
SIDES = ("ceiling", "collector", "fixed-500")


@dataclass(frozen=True, slots=True)
class Plan:
    records: int = 1_000_000
    rounds: int = 3
    flood_seconds: float = 60.0
    flood_rounds: int = 2


FULL = Plan()
QUICK = Plan(records=100_000, rounds=1, flood_seconds=10.0, flood_rounds=1)


# -- the journal --------------------------------------------------------------------------

PATHS = ("/", "/", "/", "/", "/logs", "/checkdb", "/generatecert", "/health", "/static/app.css")
AGENTS = ("wrk/4.2.0", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "curl/8.5.0")


def write_journal(folder: Path, count: int) -> int:
    """`count` journal lines as the stack writes them (times 50 µs apart, one day's file, a
    mix of paths, statuses and agents); returns the bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(15)
    start = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
    stamp = TimeFormatter()
    with open(folder / file_name(datetime.fromtimestamp(start, UTC)), "wb") as out:
        for n in range(count):
            path = rng.choice(PATHS)
            status = 200 if rng.random() < 0.97 else rng.choice((404, 500, 503))
            line = journal_line(
                (
                    stamp(start + n * 50e-6),
                    "GET",
                    path,
                    "" if rng.random() < 0.9 else f"limit={rng.randrange(1, 1000)}",
                    status,
                    rng.randrange(100, 60_000),
                    round(rng.uniform(0.2, 40.0), 3),
                    "127.0.0.1",
                    rng.choice(AGENTS),
                    "",
                    f"bench:{1000 + n % 4}",
                    uuid.UUID(int=rng.getrandbits(128)).hex,
                )
            )
            out.write(line)
        return out.tell()


def journal_rows(journal: Path) -> list[tuple[Any, ...]]:
    """Every record of the journal as a row (pos, then the record's fields), parsed."""
    rows: list[tuple[Any, ...]] = []
    for name in journal_files(journal):
        offset = 0
        while True:
            chunk = read_chunk(journal / name, offset, 10_000)
            if chunk.end == offset:
                break
            rows.extend((entry.pos, *entry.record) for entry in chunk.entries)
            offset = chunk.end
    return rows


# -- one side of a round, in a process of its own ---------------------------------------


def worker(side: str, journal: Path) -> dict[str, float]:
    """Take `journal` into the (migrated, empty) database at $BENCH_DB_URL; time it."""
    url = os.environ[URL_ENV]
    if side == "ceiling":
        rows = journal_rows(journal)
        gc.collect()
        load = CEILINGS[url.split(":", 1)[0].removesuffix("+srv")]
        began, cpu = time.perf_counter(), time.process_time()
        load(url, rows)
        return done(len(rows), began, cpu)
    store = open_store(url)
    try:
        store.migrate()
        collector = Collector(store, journal)
        if side == "fixed-500":
            collector.batch_size = collector.max_batch = FIXED_BATCH
        began, cpu = time.perf_counter(), time.process_time()
        collector.collect_once()
        return done(collector.stats.records, began, cpu)
    finally:
        store.close()


def done(records: int, began: float, cpu: float) -> dict[str, float]:
    return {
        "records": records,
        "seconds": time.perf_counter() - began,
        "cpu": time.process_time() - cpu,
    }


def sqlite_ceiling(url: str, rows: list[tuple[Any, ...]]) -> None:
    import sqlite3

    from cloud_phoenix.store.sqlite import _COLUMNS, SQLiteStore

    conn = sqlite3.connect(SQLiteStore.from_url(url).path, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")  # as the store runs it (WAL is the file's)
    marks = ", ".join("?" * len(rows[0]))
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO logs ({_COLUMNS}) VALUES ({marks})", rows)
    conn.execute("COMMIT")
    conn.close()


def postgres_ceiling(url: str, rows: list[tuple[Any, ...]]) -> None:
    import psycopg

    from cloud_phoenix.store.postgres import _COLUMNS

    with (
        psycopg.connect(url) as conn,
        conn.cursor().copy(f"COPY logs ({_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def mongo_ceiling(url: str, rows: list[tuple[Any, ...]]) -> None:
    import pymongo

    from cloud_phoenix.journal import RECORD_FIELDS

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        documents = [
            {"_id": row[0], **dict(zip(RECORD_FIELDS, row[1:], strict=True))} for row in rows
        ]
        client.get_default_database()["logs"].insert_many(documents, ordered=False)
    finally:
        client.close()


CEILINGS: dict[str, Callable[[str, list[tuple[Any, ...]]], None]] = {
    "sqlite": sqlite_ceiling,
    "postgresql": postgres_ceiling,
    "mongodb": mongo_ceiling,
}


def run_side(side: str, url: str, journal: Path) -> dict[str, float]:
    """`worker(side)` in a fresh interpreter: neither side pays for the other's objects."""
    done_ = subprocess.run(
        [sys.executable, __file__, "--worker", side, "--journal", str(journal)],
        env={**os.environ, URL_ENV: url},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done_.returncode != 0:
        raise RuntimeError(f"{side} worker failed ({done_.returncode}):\n{done_.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done_.stdout.strip().splitlines()[-1])
    return result


# -- databases ----------------------------------------------------------------------------

# fresh(name): a context giving the URL of a new, empty database, removed at its end (a
# million records take about 600 MB in either SQL store).
Fresh = Callable[[str], AbstractContextManager[str]]


@contextmanager
def sqlite_files(tmp: Path) -> Iterator[Fresh]:
    @contextmanager
    def fresh(name: str) -> Iterator[str]:
        path = tmp / "sqlite" / f"{name}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

    yield fresh


@contextmanager
def postgres_cluster() -> Iterator[Fresh]:
    sys.path.insert(0, str(REPOSITORY))  # the cluster the tests start, started the same way
    from tests.fixtures.postgres import PostgresServer, find_bindir

    server = PostgresServer(find_bindir())

    @contextmanager
    def fresh(name: str) -> Iterator[str]:
        url = server.create_database(name)
        try:
            yield url
        finally:
            server.drop_database(url)

    try:
        server.setup()
        yield fresh
    finally:
        server.destroy()


@contextmanager
def mongodb(base: str) -> Iterator[Fresh]:
    sys.path.insert(0, str(REPOSITORY))
    from tests.fixtures.stores import drop_mongo_database, fresh_mongo_url

    @contextmanager
    def fresh(_name: str) -> Iterator[str]:
        url = fresh_mongo_url(base)
        try:
            yield url
        finally:
            drop_mongo_database(url)

    yield fresh


def databases(backend: str, tmp: Path) -> AbstractContextManager[Fresh]:
    if backend == "sqlite":
        return sqlite_files(tmp)
    if backend == "postgresql":
        return postgres_cluster()
    return mongodb(os.environ[MONGO_ENV])


# -- figure 1: the collector against the ceiling ------------------------------------------


@dataclass
class Rates:
    """Records/s (wall clock) and records per CPU-second of each side, round by round."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})


def measure_ingest(backend: str, fresh: Fresh, journal: Path, plan: Plan) -> Rates:
    rates = Rates()
    for round_ in range(plan.rounds):
        shift = round_ % len(SIDES)
        for side in SIDES[shift:] + SIDES[:shift]:
            with fresh(f"{side.replace('-', '_')}_{round_}") as url:
                store = open_store(url)
                try:
                    store.migrate()  # the same schema and indexes for every side
                finally:
                    store.close()
                result = run_side(side, url, journal)
            if result["records"] != plan.records:
                raise RuntimeError(f"{backend} {side}: {result['records']} of {plan.records}")
            rates.wall[side].append(result["records"] / result["seconds"])
            rates.cpu[side].append(result["records"] / result["cpu"])
            say(
                f"  round {round_ + 1} {backend:10} {side:9} "
                f"{rates.wall[side][-1]:9,.0f} records/s ({rates.cpu[side][-1]:9,.0f} per CPU-s "
                f"of the Python process), load {os.getloadavg()[0]:.1f}"
            )
    return rates


def ingest_rows(backend: str, rates: Rates, goal: float | None) -> list[Row]:
    ceiling = rates.wall["ceiling"]
    rows = []
    for side, label in (("collector", "collector"), ("fixed-500", "  fixed 500-record batches")):
        ratios = round_ratios(rates.wall[side], ceiling)
        figure = median(ratios)
        target = goal if side == "collector" else None
        rows.append(
            Row(
                f"{backend}: {label} / ceiling, records/s"
                if side == "collector"
                else f"{label} / ceiling",
                f"≥ {goal}" if target else "-",
                f"{figure:.2f}",
                figure >= target if target else None,
                f"round ratios {spread(ratios)}; medians {median(rates.wall[side]):,.0f} "
                f"against {median(ceiling):,.0f} records/s; per CPU-second of the Python "
                f"process {median(rates.cpu[side]):,.0f} against "
                f"{median(rates.cpu['ceiling']):,.0f}",
            )
        )
    return rows


# -- figure 2: catch-up after a flood -----------------------------------------------------


def caught_up_after(store: LogStore, journal: Path, timeout: float) -> float:
    """Seconds until every journal file's position is at its size (lag 0)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if measure_lag(store.positions, journal, datetime.now(UTC)).bytes == 0:
            return time.monotonic() - began
        time.sleep(0.05)
    raise RuntimeError(f"the collector did not catch up within {timeout:g} s")


def measure_flood(
    backend: str, fresh: Fresh, tmp: Path, wrk: str, plan: Plan
) -> list[dict[str, float]]:
    results = []
    for round_ in range(plan.flood_rounds):
        home = tmp / f"flood-{backend}-{round_}"
        with fresh(f"flood_{round_}") as url:
            stack = start_stack("phoenix", home, WORKERS, {"DB_CONNECTION_STRING": url})
            store = open_store(url)
            try:
                stack.wait_collected()  # the start's own lines: the flood starts from lag 0
                flood = run_wrk(wrk, stack.url + "/", 32, plan.flood_seconds)
                behind = measure_lag(store.positions, home / "journal", datetime.now(UTC))
                seconds = caught_up_after(store, home / "journal", timeout=600)
                records = store.count()
            finally:
                store.close()
                stack.stop()
        shutil.rmtree(home, ignore_errors=True)
        results.append(
            {
                "requests": flood.requests,
                "rps": flood.rps,
                "behind_bytes": behind.bytes,
                "behind_seconds": behind.seconds,
                "catch_up": seconds,
                "records": records,
            }
        )
        say(
            f"  flood {round_ + 1} {backend:10} {flood.rps:,.0f} req/s for "
            f"{plan.flood_seconds:g} s; {behind.bytes / 1e6:.1f} MB ({behind.seconds:.1f} s) "
            f"behind at its end; caught up {seconds:.1f} s later; {records:,} records"
        )
    return results


def flood_row(backend: str, plan: Plan, results: list[dict[str, float]]) -> Row:
    catch_up = [r["catch_up"] for r in results]
    return Row(
        f"{backend}: catch-up after a {plan.flood_seconds:g} s flood (journal to lag 0)",
        "-",
        f"{median(catch_up):.1f} s",
        None,
        f"rounds {spread(catch_up, '.1f')} s; flood {median([r['rps'] for r in results]):,.0f} "
        f"req/s, {median([r['requests'] for r in results]):,.0f} requests; behind at its end "
        f"{median([r['behind_bytes'] for r in results]) / 1e6:.1f} MB, oldest record "
        f"{median([r['behind_seconds'] for r in results]):.1f} s old",
    )


# -- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 k records, a 10 s flood")
    parser.add_argument("--backend", choices=tuple(CEILINGS), action="append")
    parser.add_argument("--records", type=int, help="journal lines (default: 1 M, quick 100 k)")
    parser.add_argument("--rounds", type=int, help="rounds of the ingest figure")
    parser.add_argument("--no-flood", action="store_true", help="the ingest figure only")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.journal)))
        return 0
    plan = QUICK if args.quick else FULL
    plan = Plan(
        records=args.records or plan.records,
        rounds=args.rounds or plan.rounds,
        flood_seconds=plan.flood_seconds,
        flood_rounds=0 if args.no_flood else plan.flood_rounds,
    )
    backends = args.backend or [
        "sqlite",
        "postgresql",
        *(["mongodb"] if os.environ.get(MONGO_ENV) else []),
    ]
    wrk = ensure_wrk() if plan.flood_rounds else ""
    say(
        machine(f"ingest bench ({'quick' if args.quick else 'full'})")
        + f"; {plan.records:,} journal lines, {plan.rounds} rounds; backends {', '.join(backends)}"
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp_name:
        tmp = Path(tmp_name)
        size = write_journal(tmp / "journal", plan.records)
        say(f"journal: {plan.records:,} lines, {size / 1e6:.0f} MB")
        for backend in backends:
            with databases(backend, tmp) as fresh:
                rates = measure_ingest(backend, fresh, tmp / "journal", plan)
                rows += ingest_rows(backend, rates, None if backend == "mongodb" else 0.7)
                if plan.flood_rounds:
                    floods = measure_flood(backend, fresh, tmp, wrk, plan)
                    rows.append(flood_row(backend, plan, floods))
    say(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
