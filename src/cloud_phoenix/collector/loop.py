"""The collector: tails the journal and writes it to the store, exactly once.

Each batch and the journal position it ends at are committed in one transaction, so a
collector killed at any instant either wrote a batch and its position, or neither; the
next one starts where the store says. When the store is down it waits with backoff and
catches up when it is back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloud_phoenix.journal import Chunk, journal_files, read_chunk
from cloud_phoenix.journal.lag import Lag, measure_lag
from cloud_phoenix.proc.backoff import Backoff
from cloud_phoenix.store.base import LogStore, PositionConflict, StoreError, StoreUnavailable

log = logging.getLogger(__name__)


# The largest batch the collector grows to while it is behind (read_chunk also stops at
# 4 MiB of journal). A database server gains from every round trip and commit saved:
# PostgreSQL took a backlog at 79-125 k records/s with 16 k, 65-88 k with 4 k, 39-48 k with
# 500. SQLite works in this process, where 16 k parsed lines no longer fit the CPU's caches:
# it is fastest near 2 k (about 10 % above 16 k and 500, per CPU-second).
MAX_BATCH = 16_000
MAX_BATCH_IN_PROCESS = 2_000


def next_batch_size(current: int, base: int, largest: int, behind: bool) -> int:
    """The size of the next batch: doubled (up to `largest`) while lines wait behind the one
    just committed, `base` once the collector has caught up. Small batches when traffic is
    light keep the store close behind the journal; large ones catch up a backlog."""
    if not behind:
        return base
    return max(base, min(current * 2, largest))


@dataclass(slots=True)
class CollectorStats:
    """Running totals, for logs, /metrics and tests."""

    batches: int = 0
    records: int = 0
    malformed: int = 0
    conflicts: int = 0
    outages: int = 0


class Collector:
    """Reads journal files from the positions the store holds and commits them in batches."""

    def __init__(
        self,
        store: LogStore,
        journal_dir: Path,
        batch_size: int = 500,
        interval: float = 0.2,
        max_backoff: float = 10.0,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.store = store
        self.journal_dir = journal_dir
        self.batch_size = batch_size
        # SQLite works in this process: its inserts take the GIL back after every row, and
        # a reader thread holding it makes them wait (measured slower); a server does not.
        self.read_ahead = store.backend != "sqlite"
        self.max_batch = max(batch_size, MAX_BATCH if self.read_ahead else MAX_BATCH_IN_PROCESS)
        self._batch = batch_size  # what the next read asks for (next_batch_size)
        self._reader_pool: ThreadPoolExecutor | None = None
        self.interval = interval
        # While the store fails: half a second or two idle intervals, whichever is longer,
        # doubling up to max_backoff.
        self.backoff = Backoff(first_delay=max(0.5, 2 * interval), max_delay=max_backoff)
        self.stats = CollectorStats()
        self._stop = threading.Event()
        # sleep(seconds) returns True when the collector was asked to stop meanwhile.
        self._sleep = sleep or self._stop.wait
        self._migrated = False

    def collect_once(self) -> int:
        """Commit every whole line there is now; returns how many records were inserted."""
        if not self._migrated:
            self.store.migrate()
            self._migrated = True
        positions = self.store.positions()
        inserted = 0
        for name in journal_files(self.journal_dir):
            path = self.journal_dir / name
            offset = positions.get(name, 0)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            for chunk in self._chunks(path, offset, size):
                for bad in chunk.malformed:
                    log.warning("journal %s: skipped a malformed line at byte %d", name, bad)
                try:
                    inserted += self.store.commit_batch(name, offset, chunk.end, chunk.entries)
                except PositionConflict as exc:
                    self.stats.conflicts += 1
                    log.info("another collector moved on first (%s); re-reading positions", exc)
                    return inserted
                self.stats.batches += 1
                self.stats.records += len(chunk.entries)
                self.stats.malformed += len(chunk.malformed)
                offset = chunk.end
        return inserted

    def _chunks(self, path: Path, offset: int, size: int) -> Iterator[Chunk]:
        """The chunks of `path` from `offset` to `size`, each read once the one before it is
        committed, or, while the collector is behind, read and parsed while it commits.

        Parsing is most of the collector's own work, and a database server works in a
        process of its own, so the two overlap. Only reading runs ahead: positions move
        as before, batch by batch.
        """
        ahead: Future[Chunk] | None = None
        while offset < size:
            chunk = ahead.result() if ahead else read_chunk(path, offset, self._batch)
            ahead = None
            if chunk.end == offset:
                return  # only a line still being written
            behind = chunk.end < size
            self._batch = next_batch_size(self._batch, self.batch_size, self.max_batch, behind)
            if self.read_ahead and behind and len(chunk.entries) >= self.max_batch // 2:
                ahead = self._reader().submit(read_chunk, path, chunk.end, self._batch)
            yield chunk
            offset = chunk.end

    def _reader(self) -> ThreadPoolExecutor:
        """The one thread that reads ahead; made the first time a backlog needs it."""
        if self._reader_pool is None:
            self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="collector-read")
        return self._reader_pool

    def run(self) -> None:
        """Collect until `stop()`, backing off while the store is unavailable."""
        failures = 0
        down_since: float | None = None
        while True:
            try:
                self.collect_once()
            except StoreError as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    self.stats.outages += 1
                    log.error("collector: store unavailable, retrying with backoff: %s", exc)
                failures += 1
                if isinstance(exc, StoreUnavailable):
                    self._migrated = False
            else:
                if down_since is not None:
                    log.warning(
                        "collector: store is back after %.1f s; catching up",
                        time.monotonic() - down_since,
                    )
                    down_since = None
                failures = 0
            if self._sleep(self.backoff.delay(failures) if failures else self.interval):
                break
        self.flush()

    def flush(self, deadline: float = 5.0) -> None:
        """One last pass on the way out, bounded in time (the journal keeps what is left)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                if self.collect_once() == 0:
                    return
            except StoreError as exc:
                log.warning("collector: final flush incomplete, journal keeps the rest: %s", exc)
                return

    def stop(self) -> None:
        self._stop.set()

    def lag(self, now: datetime | None = None) -> Lag:
        return measure_lag(self.store.positions(), self.journal_dir, now or datetime.now(UTC))
