"""The collector: tails the journal and writes it to the store, exactly once.

Each batch and the journal position it ends at are committed in one transaction, so a
collector killed at any instant either wrote a batch and its position, or neither; the
next one starts where the store says. When the store is down it waits with backoff and
catches up when it is back.

A file is read on from the store's position only if it is the file the store read there
(collector.filecheck). One that is not, another instance's file of the same name or one a
crash cut short, is moved to a new name (journal.reuse) and read from the end of what the
store holds of it, said loudly (an error in the log, an event, /ready and /metrics): no
line of it is skipped. Once an hour the collector prunes what collector.retention says.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cloud_phoenix.collector.filecheck import FileCheck, Mismatch
from cloud_phoenix.collector.retention import (
    JournalFile,
    files_to_delete,
    first_kept_day,
    positions_to_forget,
)
from cloud_phoenix.config import BACKUP_OFF, Settings
from cloud_phoenix.journal import FILE_RE, Chunk, format_time, journal_files, read_chunk
from cloud_phoenix.journal.lag import Lag, measure_lag
from cloud_phoenix.journal.reuse import links, move_aside, reissued_name
from cloud_phoenix.proc.backoff import Backoff
from cloud_phoenix.store.base import (
    Event,
    LogStore,
    PositionConflict,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

NAME_REUSED = "journal_name_reused"  # the event of a file moved to a new name
PRUNE_EVERY = 3600.0  # seconds between prunes of the journal and the positions


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
    moved: int = 0  # files moved to a new name (journal.reuse)
    pruned: int = 0  # journal files deleted past the retention


class Collector:
    """Reads journal files from the positions the store holds and commits them in batches.

    `retention_days`: positions of files twice that old and gone are forgotten, and with
    `prune_journal`, files that old that the store holds all of are deleted.
    """

    def __init__(
        self,
        store: LogStore,
        journal_dir: Path,
        batch_size: int = 500,
        interval: float = 0.2,
        max_backoff: float = 10.0,
        sleep: Callable[[float], bool] | None = None,
        retention_days: int = 7,
        prune_journal: bool = False,
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
        self.retention_days = retention_days
        self.prune_journal = prune_journal
        # While the store fails: half a second or two idle intervals, whichever is longer,
        # doubling up to max_backoff.
        self.backoff = Backoff(first_delay=max(0.5, 2 * interval), max_delay=max_backoff)
        self.stats = CollectorStats()
        self._stop = threading.Event()
        # sleep(seconds) returns True when the collector was asked to stop meanwhile.
        self._sleep = sleep or self._stop.wait
        self._migrated = False
        self._files = FileCheck(store, journal_dir)
        self._unmovable: set[str] = set()  # said once, not on every pass

    @classmethod
    def from_settings(cls, store: LogStore, settings: Settings) -> Collector:
        """The collector of `settings`. It deletes collected journal files past the retention
        where no daily backup runs beside it (PHOENIX_BACKUP_AT=off, as in a cluster); where
        one does, that backup prunes them once they are in its archive."""
        return cls(
            store,
            settings.journal_dir,
            settings.collect_batch,
            settings.collect_interval,
            retention_days=settings.backup_retention_days,
            prune_journal=settings.backup_at == BACKUP_OFF,
        )

    def collect_once(self) -> int:
        """Commit every whole line there is now; returns how many records were inserted."""
        if not self._migrated:
            self.store.migrate()
            self._migrated = True
        names = journal_files(self.journal_dir)
        positions = self.store.positions(names) if names else {}
        inserted = 0
        pending = deque(names)
        while pending:
            name = pending.popleft()
            path = self.journal_dir / name
            offset = positions.get(name, 0)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            if offset:
                mismatch = self._files.mismatch(name, stat, offset)
                if mismatch is not None:
                    moved = self._move_aside(name, mismatch, stat.st_size, offset)
                    if moved is not None:
                        positions[moved] = mismatch.collected
                        pending.append(moved)  # read on in this pass
                    continue
            for chunk in self._chunks(path, offset, stat.st_size):
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

    def _move_aside(self, name: str, mismatch: Mismatch, size: int, offset: int) -> str | None:
        """Move `name` to a name that has no position (journal.reuse), the store holding
        what `mismatch` says; the new name, or None if it was not moved (another collector
        moved it, or it cannot be: then none of it is read, and /ready says why)."""
        problem, collected = mismatch.problem, mismatch.collected
        new = reissued_name(name)
        while self.store.positions([new]):  # 32 random bits: all but never taken
            new = reissued_name(name)
        if collected:
            # Before the move: should the store fail now, the file keeps its name and the
            # next pass tries again; after it, the new name would be read from its start.
            self.store.commit_batch(new, 0, collected, [])
        try:
            if not move_aside(self.journal_dir, name, new):
                return None
        except OSError as exc:
            if name not in self._unmovable:
                self._unmovable.add(name)
                log.error(
                    "journal %s: %s, and it cannot be moved to a new name (%s): none of it "
                    "is collected until it can",
                    name,
                    problem,
                    exc.strerror or exc,
                )
            return None
        self._unmovable.discard(name)
        self.stats.moved += 1
        if collected:
            message = (
                f"journal file {name}: {problem}; moved to {new} and collected from byte "
                f"{collected}, the end of what the store holds of it: no line skipped"
            )
        else:
            message = (
                f"journal file {name}: {problem}: another file had its name (an instance "
                f"name used twice); moved to {new} and collected from its start, no line "
                "skipped"
            )
        log.error("%s", message)
        details = {
            "file": name,
            "moved_to": new,
            "size": size,
            "stored_position": offset,
            "collected": collected,
        }
        self._event(NAME_REUSED, message, details)
        return new

    def _event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        try:
            self.store.add_event(Event(format_time(datetime.now(UTC)), kind, message, data))
        except StoreError as exc:
            log.warning("collector: event %s not stored (this log has it): %s", kind, exc)

    def prune(self, today: date) -> None:
        """Delete what collector.retention says: journal files (with `prune_journal`), the
        links of names moved aside past the retention, positions of files long gone."""
        names = journal_files(self.journal_dir)
        positions = self.store.positions(names) if names else {}
        if self.prune_journal:
            files = []
            for name in names:
                day = _day(name)
                try:
                    size = (self.journal_dir / name).stat().st_size
                except FileNotFoundError:
                    continue
                if day is not None:
                    files.append(JournalFile(name, day, size, positions.get(name, 0)))
            for name in files_to_delete(files, today, self.retention_days):
                if self._delete(name):
                    self.stats.pruned += 1
                    log.info("journal %s deleted: collected, and past the retention", name)
        first = first_kept_day(today, self.retention_days)
        for name in links(self.journal_dir):
            day = _day(name)
            if day is not None and day < first:
                self._delete(name)
        stored = {name: day for name in self.store.positions() if (day := _day(name))}
        stale = positions_to_forget(stored, set(names), today, self.retention_days)
        if stale:
            forgotten = self.store.forget_positions(stale)
            log.info("collector: forgot the positions of %d journal files long gone", forgotten)

    def _delete(self, name: str) -> bool:
        try:
            (self.journal_dir / name).unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("journal %s not deleted: %s", name, exc.strerror or exc)
            return False
        return True

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
        next_prune = time.monotonic()
        while True:
            try:
                self.collect_once()
                if time.monotonic() >= next_prune:
                    self.prune(datetime.now(UTC).date())
                    next_prune = time.monotonic() + PRUNE_EVERY
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
        return measure_lag(self.store.positions, self.journal_dir, now or datetime.now(UTC))


def _day(name: str) -> date | None:
    """The UTC day a journal file's name carries (None: not a journal file's name)."""
    match = FILE_RE.match(name)
    try:
        return date.fromisoformat(match.group(1)) if match else None
    except ValueError:  # 2026-13-45 has the pattern's shape
        return None
