"""Drills of the collector's promise: every journal line in the store exactly once, whatever
dies. Bounded in count and time; traffic only to 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloud_phoenix.collector.keeper import collector_spec
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time
from cloud_phoenix.proc.child import Child
from cloud_phoenix.stack.status import read_status
from cloud_phoenix.store import Cursor, LogQuery, LogStore, StoreError, open_store
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.server import PhoenixProcess, running_stack, start_phoenix
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.drill


def stored_ids(store: LogStore) -> Counter[str]:
    """Every request id in the store, counted (pages of 1000 through the real query path)."""
    ids: Counter[str] = Counter()
    query = LogQuery(limit=1000)
    while True:
        rows = store.query(query)
        ids.update(row.record.request_id for row in rows)
        if len(rows) < query.limit:
            return ids
        query = LogQuery(limit=1000, before=Cursor(rows[-1].record.time, rows[-1].pos))


def wait_for_ids(store: LogStore, wanted: set[str], timeout: float = 30.0) -> Counter[str]:
    """Every stored request id, once all of `wanted` are in the store."""

    def all_stored() -> Counter[str] | None:
        ids = stored_ids(store)
        return ids if wanted <= set(ids) else None

    # A StoreError: the store may still be coming back. Each look reads the whole store.
    return eventually(
        all_stored, timeout, what=f"{len(wanted)} ids stored", ignore=(StoreError,), interval=0.2
    )


class JournalFeeder:
    """Appends records to the journal from a thread, as live traffic would (two days)."""

    def __init__(self, journal: Path, total: int) -> None:
        self.total = total
        self.written: list[str] = []
        start = datetime(2026, 11, 27, 23, 59, 58, tzinfo=UTC)
        self._clock = [start]
        self._writer = JournalWriter(journal, clock=lambda: self._clock[0].timestamp())  # noqa: PLW0108
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for n in range(self.total):
            if n == self.total // 2:
                self._clock[0] += timedelta(seconds=5)  # midnight: the next day's file
            rid = f"drill-{n:06d}"
            when = format_time(self._clock[0] + timedelta(microseconds=n))
            self._writer.append(
                AccessRecord(
                    when, "GET", "/", "", 200, 10, 1.0, "127.0.0.1", "drill", "", "drill:1", rid
                )
            )
            self.written.append(rid)
            if n % 200 == 0:
                time.sleep(0.01)  # paced on purpose, as live traffic arrives
        self._writer.close()

    def __enter__(self) -> JournalFeeder:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._thread.join(timeout=60)


def collector_process(home: Path, db_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PHOENIX_HOME": str(home),
        "DB_CONNECTION_STRING": db_url,
        "PHOENIX_COLLECT_BATCH": "25",
        "PHOENIX_COLLECT_INTERVAL": "0.05",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_phoenix", "collect"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/db/phoenix.sqlite3"
    else:
        yield request.getfixturevalue("postgres_db_url")


def test_kill_9_mid_batch_loses_and_doubles_nothing(tmp_path: Path, db_url: str) -> None:
    """SIGKILL the collector at random instants while lines keep arriving, ten times."""
    home = tmp_path / "home"
    rng = random.Random(20261127)
    total = 6000
    kills = 0
    with JournalFeeder(home / "journal", total) as feeder:
        for _ in range(10):
            process = collector_process(home, db_url)
            time.sleep(rng.uniform(0.15, 0.6))  # a random instant, the thing under test
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            kills += 1
    assert kills == 10 and len(feeder.written) == total
    store = open_store(db_url)
    try:
        partial = store.count()
        assert partial > 0, "the collector made no progress between kills"
        final = subprocess.run(
            [sys.executable, "-m", "cloud_phoenix", "collect", "--once"],
            env={**os.environ, "PHOENIX_HOME": str(home), "DB_CONNECTION_STRING": db_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert final.returncode == 0, final.stderr
        ids = stored_ids(store)
        counted = store.count()  # the record counter moved in the same transactions
    finally:
        store.close()
    assert sum(ids.values()) == total == counted
    assert not [rid for rid, n in ids.items() if n > 1], "doubled records"
    assert set(ids) == set(feeder.written), "lost records"


def test_database_outage_mid_stream_loses_and_doubles_nothing(
    tmp_path: Path, postgres_server: PostgresServer, postgres_db_url: str
) -> None:
    """Serve traffic; stop PostgreSQL for 3 s in the middle; every answered request is stored
    once, no request fails, and /ready says 503 while the database is away."""
    server = start_phoenix(
        tmp_path / "home",
        env={"DB_CONNECTION_STRING": postgres_db_url, "PHOENIX_COLLECT_INTERVAL": "0.05"},
    )
    answered: list[str] = []
    failed: list[str] = []
    ready_during_outage: list[int] = []
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:

            def traffic(seconds: float) -> None:
                end = time.monotonic() + seconds
                n = 0
                while time.monotonic() < end:
                    rid = f"outage-{len(answered) + len(failed):05d}-{n}"
                    n += 1
                    try:
                        response = client.get("/health", headers={"X-Request-ID": rid})
                        (answered if response.status_code == 200 else failed).append(rid)
                    except httpx.HTTPError:
                        failed.append(rid)
                    time.sleep(0.02)  # paced on purpose: about 50 requests a second

            traffic(1.5)
            postgres_server.stop()
            try:
                traffic(1.5)
                ready_during_outage.append(client.get("/ready").status_code)
                traffic(1.5)
            finally:
                postgres_server.start()
            traffic(1.5)
            store = open_store(postgres_db_url)
            try:
                ids = wait_for_ids(store, set(answered), timeout=45)
            finally:
                store.close()
    finally:
        server.stop()
    assert not failed, f"{len(failed)} requests failed while the database was down"
    assert ready_during_outage == [503]
    doubled = [rid for rid, n in ids.items() if n > 1]
    missing = set(answered) - set(ids)
    assert not doubled and not missing, f"doubled {doubled[:5]}, missing {sorted(missing)[:5]}"


def test_crash_of_serve_mid_stream_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """`/crash` kills `phoenix serve` (and its collector child) mid-stream; a restart on
    the same home picks up from the stored position: every record once, the crash included."""
    home = tmp_path / "home"
    rids: list[str] = []
    for round_ in range(3):
        server = start_phoenix(home, env={"PHOENIX_COLLECT_INTERVAL": "0.05"})
        try:
            with httpx.Client(base_url=server.url, timeout=10) as client:
                for n in range(150):
                    rid = f"r{round_}-{n}"
                    assert client.get("/health", headers={"X-Request-ID": rid}).status_code == 200
                    rids.append(rid)
                rid = f"crash-{round_}"
                with pytest.raises(httpx.HTTPError):
                    client.get("/crash", headers={"X-Request-ID": rid})
                rids.append(rid)
            server.process.wait(10)
            assert server.process.returncode == 1
        finally:
            server.stop()
    store = open_store(f"sqlite:///{home}/db/phoenix.sqlite3")
    try:
        subprocess.run(
            [sys.executable, "-m", "cloud_phoenix", "collect", "--once"],
            env={**os.environ, "PHOENIX_HOME": str(home)},
            check=True,
            capture_output=True,
            timeout=60,
        )
        ids = stored_ids(store)
        crash_rows = store.query(LogQuery(limit=10, path="/crash"))
    finally:
        store.close()
    drill_ids = sorted(rid for rid in ids.elements() if rid.startswith(("r", "crash-")))
    assert drill_ids == sorted(rids)  # the rest are the fixture's readiness probes
    assert {row.record.status for row in crash_rows} == {500}


def test_a_collector_stopped_while_it_starts_still_makes_its_last_pass(tmp_path: Path) -> None:
    """The collector child as `phoenix up` and `phoenix serve` start it, sent SIGTERM 0 to
    200 ms after its start, mostly while it still imports: it holds the stop until its
    handler is in place, then collects every line and exits 0, instead of dying on it."""
    failures = []
    for round_ in range(2):
        for instant in (0.0, 0.01, 0.05, 0.1, 0.2):
            home = tmp_path / f"r{round_}-{instant * 1000:.0f}ms"
            with JournalFeeder(home / "journal", 50) as feeder:
                pass
            db_url = f"sqlite:///{home}/db/phoenix.sqlite3"
            store = open_store(db_url)
            try:
                store.migrate()  # its tables exist even if the child dies before it migrates
                env = {**os.environ, "PHOENIX_HOME": str(home), "DB_CONNECTION_STRING": db_url}
                child = Child(collector_spec({**env, "PHOENIX_COLLECT_INTERVAL": "5"}, None))
                child.start(time.monotonic())
                time.sleep(instant)  # the instant under test, not a wait for a condition
                code = child.stop(grace=30)
                ids = stored_ids(store)
            finally:
                store.close()
            if code != 0 or ids != Counter(feeder.written):
                failures.append(f"{instant * 1000:.0f} ms: exit {code}, {len(ids)} of 50 stored")
    assert not failures, failures


def running_collector(stack: PhoenixProcess, not_one_of: list[int]) -> int:
    """The pid of the stack's collector once it runs and is none of `not_one_of`."""

    def new_collector() -> int | None:
        status = read_status(stack.home / "run")
        child = status.children.get("collector") if status else None
        if child and child.running and child.pid and child.pid not in not_one_of:
            return child.pid
        return None

    return eventually(new_collector, 15, what="a new collector")


def test_a_stack_stopped_while_its_collector_waits_to_be_restarted_collects_everything(
    tmp_path: Path,
) -> None:
    """Killed four times in a row, the collector of `phoenix up` is restarted a second later
    at the earliest; a SIGTERM meanwhile finds no collector to make the last pass, and the
    supervisor makes it: every journal line is in the store, once."""
    with running_stack(tmp_path / "home", PHOENIX_COLLECT_INTERVAL="5") as stack:
        killed: list[int] = []
        for _ in range(4):
            killed.append(running_collector(stack, killed))
            os.kill(killed[-1], signal.SIGKILL)
        with httpx.Client(base_url=stack.url, timeout=10) as client:
            for n in range(10):
                client.get("/health", headers={"X-Request-ID": f"gap-{n}"}).raise_for_status()
        assert stack.stop(timeout=40) == 0
    journal: Counter[str] = Counter()
    for path in (stack.home / "journal").glob("*.jsonl"):
        journal.update(json.loads(line)["request_id"] for line in path.read_bytes().splitlines())
    store = open_store(f"sqlite:///{stack.home}/db/phoenix.sqlite3")
    try:
        stored = stored_ids(store)
    finally:
        store.close()
    assert {f"gap-{n}" for n in range(10)} <= set(journal)
    assert stored == journal, f"{sum((journal - stored).values())} journal lines not collected"
