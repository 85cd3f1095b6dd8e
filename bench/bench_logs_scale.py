"""`/logs` and `/checkdb` as the store grows: a store of 100 k records against one of 10 M.

Run from the repository root: `.venv/bin/python bench/bench_logs_scale.py [--records N]`.

For each backend (SQLite files in a temp folder; PostgreSQL databases in a throw-away
cluster started as the tests start theirs), two stores of the same schema and indexes are
filled straight in the database (one INSERT ... SELECT over generated numbers per million
rows: no Python per row), then settled (VACUUM ANALYZE, a WAL checkpoint) and each served
by its own `phoenix serve`. Records are 10 ms apart, nine paths (four in nine `/`),
statuses 97 % 200, then 404, 500 and 503, spread by a hash so that every filter matches
throughout the store.

Each round measures, on both stores back to back (the order alternating), sequential
keep-alive calls of `GET /logs?limit=100` with each filter (none, `path`, `status`,
`since`, `path` and `status`), of `GET /logs?limit=1000` following `next` from the middle of
the store (deep pagination), and of `GET /checkdb`. The figure is p95 at the large size over
p95 at the small one, within each round, then the median over rounds; the goal is ≤ 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
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

from cloud_phoenix.journal import format_time
from cloud_phoenix.store import open_store
from report import Row, machine, print_table, say
from servers import BENCH, Server, start_phoenix
from stats import median, percentile, round_ratios, spread

SMALL = 100_000
CHUNK = 1_000_000  # rows per INSERT ... SELECT
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP_MS = 10
PATHS = ("/", "/", "/", "/", "/logs", "/checkdb", "/generatecert", "/health", "/static/app.css")
# (name, query string): the filters of the issue, each for 100 records.
FILTERS: tuple[tuple[str, dict[str, str]], ...] = (
    ("none", {}),
    ("path", {"path": "/logs"}),
    ("status", {"status": "500"}),
    ("since", {"since": "2026-01-01T00:08:20Z"}),  # half-way through the small store
    ("path+status", {"path": "/logs", "status": "503"}),
)
PAGES = 10  # pages of 1,000 records followed through `next`, from the middle of the store


@dataclass(frozen=True, slots=True)
class Plan:
    records: int = 10_000_000
    rounds: int = 3
    calls: int = 40  # per filter, store and round


# Each backend's statement that inserts records [first, last): pos "2026-01-01:" and the
# number in 12 digits, time T0 + 10 ms per record, path and status by a multiplicative hash.
_PATH_CASE = "CASE {h} % 9 " + " ".join(f"WHEN {i} THEN '{p}'" for i, p in enumerate(PATHS))
_STATUS = "CASE WHEN {h} % 100 < 97 THEN 200 WHEN {h} % 100 = 97 THEN 404 WHEN {h} % 100 = 98 THEN 500 ELSE 503 END"  # noqa: E501
_T0_EPOCH = int(T0.timestamp())
SQLITE_FILL = (
    "WITH RECURSIVE s(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM s WHERE n + 1 < ?) "
    "INSERT INTO logs SELECT printf('2026-01-01:%012d', n), "
    f"strftime('%Y-%m-%dT%H:%M:%S', {_T0_EPOCH} + n / 100, 'unixepoch') "
    "|| printf('.%06dZ', (n % 100) * 10000), 'GET', "
    + _PATH_CASE.format(h="((n * 7919) % 1000003)")
    + " END, '', "
    + _STATUS.format(h="((n * 104729) % 1000003)")
    + ", 512 + n % 4096, 1.5, '127.0.0.1', 'bench', '', 'bench:1', printf('req-%d', n) FROM s"
)
POSTGRES_FILL = (
    "INSERT INTO logs SELECT '2026-01-01:' || lpad(n::text, 12, '0'), "
    f"to_char(to_timestamp({_T0_EPOCH}) AT TIME ZONE 'UTC' + n * interval '10 ms', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'GET', "
    + _PATH_CASE.format(h="((n * 7919) % 1000003)")
    + " END, '', "
    + _STATUS.format(h="((n * 104729) % 1000003)")
    + ", 512 + n % 4096, 1.5, '127.0.0.1', 'bench', '', 'bench:1', 'req-' || n "
    "FROM generate_series({first}::bigint, {last}::bigint - 1) AS n"
)
COUNT = "UPDATE logs_count SET records = {n} WHERE id = 1"


def cursor_at(n: int) -> str:
    """The `next` cursor of a page whose last record is record `n`."""
    return f"{format_time(T0 + timedelta(milliseconds=STEP_MS * n))}~2026-01-01:{n:012d}"


# -- filling ------------------------------------------------------------------------------

Fill = Callable[[int], float]  # fill(count): records/s


@contextmanager
def sqlite_stores(tmp: Path) -> Iterator[Callable[[str], tuple[str, Fill]]]:
    def store(name: str) -> tuple[str, Fill]:
        path = tmp / "sqlite" / f"{name}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        url = f"sqlite:///{path}"

        def fill(count: int) -> float:
            began = time.perf_counter()
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute("PRAGMA synchronous=OFF")  # a bench fill: no crash to survive
                for first in range(0, count, CHUNK):
                    conn.execute("BEGIN")
                    conn.execute(SQLITE_FILL, (first, min(first + CHUNK, count)))
                    conn.execute("COMMIT")
                    say(f"  {min(first + CHUNK, count):,} rows")
                conn.execute(COUNT.format(n=count))
                conn.execute("ANALYZE")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            return count / (time.perf_counter() - began)

        return url, fill

    try:
        yield store
    finally:
        shutil.rmtree(tmp / "sqlite", ignore_errors=True)  # 10 M records: about 6 GB


@contextmanager
def postgres_stores(_tmp: Path) -> Iterator[Callable[[str], tuple[str, Fill]]]:
    sys.path.insert(0, str(BENCH.parent))  # the cluster the tests start, started the same way
    from tests.fixtures.postgres import PostgresServer, find_bindir

    server = PostgresServer(find_bindir())

    def store(name: str) -> tuple[str, Fill]:
        url = server.create_database(name)

        def fill(count: int) -> float:
            began = time.perf_counter()
            with psycopg.connect(url, autocommit=True) as conn:
                for first in range(0, count, CHUNK):
                    last = min(first + CHUNK, count)
                    conn.execute(POSTGRES_FILL.format(first=first, last=last).encode())
                    say(f"  {min(first + CHUNK, count):,} rows")
                conn.execute(COUNT.format(n=count).encode())
                conn.execute(b"VACUUM ANALYZE logs")
            return count / (time.perf_counter() - began)

        return url, fill

    try:
        server.setup()
        yield store
    finally:
        server.destroy()


# -- measuring ----------------------------------------------------------------------------


Body = dict[str, object]


def timed(
    client: httpx.Client, path: str, params: dict[str, str]
) -> tuple[float, dict[str, object]]:
    began = time.perf_counter()
    answer = client.get(path, params=params)
    elapsed = (time.perf_counter() - began) * 1000
    if answer.status_code != 200:
        raise RuntimeError(f"{path} {params} answered {answer.status_code}: {answer.text[:300]}")
    body: Body = answer.json()
    return elapsed, body


def sample(server: Server, records: int, calls: int) -> dict[str, list[float]]:
    """Milliseconds of each call, by figure name, on one store."""
    out: dict[str, list[float]] = {}
    with httpx.Client(base_url=server.url, timeout=60.0) as client:
        for _ in range(3):  # warm the connection and the server's caches up
            timed(client, "/logs", {})
        for name, params in FILTERS:
            out[name] = []
            for _ in range(calls):
                ms, body = timed(client, "/logs", {"limit": "100", **params})
                if body["count"] != 100:
                    raise RuntimeError(f"/logs {params}: {body['count']} records, not 100")
                out[name].append(ms)
        out["deep next"] = []
        cursor: object = cursor_at(records // 2)
        for _ in range(PAGES):
            ms, body = timed(client, "/logs", {"limit": "1000", "before": str(cursor)})
            if body["count"] != 1000:
                raise RuntimeError(f"/logs before {cursor}: {body['count']} records")
            out["deep next"].append(ms)
            cursor = body["next"]
        out["/checkdb"] = []
        for _ in range(calls):
            ms, body = timed(client, "/checkdb", {})
            if int(str(body["records"])) < records:  # the server collects its own requests
                raise RuntimeError(f"/checkdb: {body['records']} records, not {records}")
            out["/checkdb"].append(ms)
    return out


def measure(backend: str, tmp: Path, plan: Plan) -> list[Row]:
    opener = sqlite_stores if backend == "sqlite" else postgres_stores
    sizes = (SMALL, plan.records)
    servers: list[Server] = []
    rates: list[float] = []
    with opener(tmp) as store:
        try:
            for size in sizes:
                url, fill = store(f"logs_{size}")
                created = open_store(url)
                try:
                    created.migrate()  # the store's own schema and indexes
                finally:
                    created.close()
                say(f"{backend}: filling a store with {size:,} records ...")
                rates.append(fill(size))
                say(f"  {rates[-1]:,.0f} records/s; load {os.getloadavg()[0]:.1f}")
                home = tmp / f"home-{backend}-{size}"
                servers.append(start_phoenix(home, {"DB_CONNECTION_STRING": url}))
            p95: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
            for round_ in range(plan.rounds):
                order = (0, 1) if round_ % 2 == 0 else (1, 0)
                for index in order:
                    size = sizes[index]
                    for name, values in sample(servers[index], size, plan.calls).items():
                        p95[size].setdefault(name, []).append(percentile(values, 95))
                say(
                    f"  round {round_ + 1}: "
                    + ", ".join(
                        f"{name} {p95[SMALL][name][-1]:.1f}/{p95[plan.records][name][-1]:.1f} ms"
                        for name in p95[SMALL]
                    )
                    + f"; load {os.getloadavg()[0]:.1f}"
                )
        finally:
            for server in servers:
                server.stop()
    rows = []
    for name in p95[SMALL]:
        large, small = p95[plan.records][name], p95[SMALL][name]
        ratios = round_ratios(large, small)
        figure = median(ratios)
        rows.append(
            Row(
                f"{backend}: p95 {name} at {plan.records:,} / at {SMALL:,}",
                "≤ 2",
                f"{figure:.2f}",
                figure <= 2,
                f"round ratios {spread(ratios)}; p95 {median(small):.1f} ms at {SMALL:,}, "
                f"{median(large):.1f} ms at {plan.records:,} (medians of rounds)",
            )
        )
    rows.append(
        Row(
            f"{backend}: fill of {plan.records:,}",
            "-",
            f"{rates[-1]:,.0f} records/s",
            None,
            "INSERT ... SELECT over generated numbers, into the store's schema and indexes",
        )
    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=Plan().records, help="the large store")
    parser.add_argument("--rounds", type=int, default=Plan().rounds)
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql"), action="append", help="default: both"
    )
    args = parser.parse_args()
    plan = Plan(records=args.records, rounds=args.rounds)
    say(machine("logs scale bench") + f"; {SMALL:,} against {plan.records:,} records")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp:
        for backend in args.backend or ("sqlite", "postgresql"):
            rows += measure(backend, Path(tmp), plan)
    say(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
