"""The collector: tails the journal and writes it to the store, exactly once.

Each batch and the journal position it ends at are committed in one transaction, so a
collector killed at any instant either wrote a batch and its position, or neither; the
next one starts where the store says. When the store is down it waits with backoff and
catches up when it is back.

A file is read on from the store's position only if it is the file the store read there,
as far as the store read it (its first record and the line that ends at that position are
the store's). One whose first record is not has a name another file had (journal.reuse):
it is moved to a new name and read from its start. One that is shorter, or whose line at
the position is not the store's, was cut short by a crash and written on: it is moved to a
new name and read from the end of what the store holds of it. Either is said loudly (an
error in the log, an event, /ready and /metrics), and no line of it is skipped. Once an
hour the collector prunes what collector.retention says.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cloud_phoenix.collector.retention import (
    JournalFile,
    files_to_delete,
    first_kept_day,
    positions_to_forget,
)
from cloud_phoenix.config import BACKUP_OFF, Settings
from cloud_phoenix.journal import (
    FILE_RE,
    JournalEntry,
    format_time,
    journal_files,
    parse_time,
    read_chunk,
)
from cloud_phoenix.journal.lag import Lag, measure_lag
from cloud_phoenix.journal.reuse import links, move_aside, reissued_name
from cloud_phoenix.proc.backoff import Backoff
from cloud_phoenix.store.base import (
    Event,
    LogQuery,
    LogStore,
    PositionConflict,
    StoreError,
    StoreUnavailable,
)

log = logging.getLogger(__name__)

NAME_REUSED = "journal_name_reused"  # the event of a file moved to a new name
PRUNE_EVERY = 3600.0  # seconds between prunes of the journal and the positions
_LINE_MAX = 64 << 10  # bytes that hold a whole journal line: each value is capped
_SAME_TIME = 100  # records of one microsecond looked through for a request id


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
        # Files found to be the ones the store read, by (device, inode): checked once; and
        # those found not to be, with why and how much of them the store holds.
        self._checked: dict[str, tuple[int, int]] = {}
        self._mismatches: dict[str, tuple[tuple[int, int], tuple[str, int]]] = {}
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
                mismatch = self._other_file(name, stat, offset)
                if mismatch is not None:
                    problem, collected = mismatch
                    moved = self._move_aside(name, problem, stat.st_size, offset, collected)
                    if moved is not None:
                        positions[moved] = collected
                        pending.append(moved)  # read on in this pass
                    continue
            while offset < stat.st_size:
                chunk = read_chunk(path, offset, self.batch_size)
                if chunk.end == offset:
                    break  # only a line still being written
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

    def _other_file(self, name: str, stat: os.stat_result, offset: int) -> tuple[str, int] | None:
        """Why `name` cannot be read on from the store's position `offset`, and how many of
        its first bytes the store holds where they stand; None if it can.

        The file is the one the store read if its first record and the line that ends at
        `offset` are the store's (looked at once per file). If its first record is not,
        another file had its name: the store holds none of it. If only the end is not (or
        the file is shorter than `offset`), a crash cut it short before the disk had its
        end, and new lines followed: the store holds it up to the cut. Either way lines read
        on from `offset` would be skipped, or land on positions the store has."""
        identity = (stat.st_dev, stat.st_ino)
        shorter = stat.st_size < offset
        if not shorter and self._checked.get(name) == identity:
            return None
        known = self._mismatches.get(name)
        if known is not None and known[0] == identity:
            return known[1]  # one that could not be moved yet: not searched on every pass
        mismatch = self._mismatch(name, shorter, stat.st_size, offset)
        if mismatch is None:
            self._checked[name] = identity
        else:
            self._mismatches[name] = (identity, mismatch)
        return mismatch

    def _mismatch(self, name: str, shorter: bool, size: int, offset: int) -> tuple[str, int] | None:
        """_other_file's answer, looked for in the file and the store."""
        path = self.journal_dir / name
        entries = read_chunk(path, 0, 1, max_bytes=_LINE_MAX).entries
        first = entries[0] if entries and entries[0].offset < offset else None
        if first is not None and not self._stored(first):
            return f"its first record (at {first.pos}) is not in the store", 0
        if not shorter and self._ends_as_read(path, offset):
            return None
        what = f"it holds {size} bytes, fewer than the {offset} the store has read"
        if not shorter:
            what = f"the line the store read up to byte {offset} is not there"
        if first is None:  # no record tells whose file it is: none of it is the store's
            return f"{what} of a file of that name", 0
        return f"{what} of it: a crash cut it short", self._held_prefix(path, offset)

    def _ends_as_read(self, path: Path, offset: int) -> bool:
        """Whether the line that ends at `offset` is the store's record (or a malformed
        line, which tells nothing)."""
        start = max(0, offset - _LINE_MAX)
        with path.open("rb") as file:
            file.seek(start)
            window = file.read(offset - start)
        if not window.endswith(b"\n"):
            return False
        before = window.rfind(b"\n", 0, len(window) - 1)
        entry = self._entry_at(path, start + before + 1)
        return entry is None or self._stored(entry)

    def _held_prefix(self, path: Path, limit: int) -> int:
        """Where the lines at the start of `path` (before `limit`) that the store holds end:
        a binary search over the lines, since a file cut short is the store's up to the cut
        and nothing after it is (its records are new)."""
        ends = _line_ends(path, limit)
        low, high = 0, len(ends)  # lines before `low` are held, from `high` on they are not
        while low < high:
            middle = (low + high) // 2
            entry = self._entry_at(path, ends[middle - 1] if middle else 0)
            if entry is not None and self._stored(entry):
                low = middle + 1
            else:
                high = middle
        return ends[low - 1] if low else 0

    def _entry_at(self, path: Path, start: int) -> JournalEntry | None:
        """The record of the line that begins at `start`; None if it is malformed."""
        entries = read_chunk(path, start, 1, max_bytes=_LINE_MAX).entries
        return entries[0] if entries and entries[0].offset == start else None

    def _stored(self, entry: JournalEntry) -> bool:
        """Whether the store holds `entry`'s record, under whatever file name: a record of
        its time with its request id (a file moved aside holds records stored under its
        old name)."""
        since = entry.record.time
        try:
            until = format_time(parse_time(since) + timedelta(microseconds=1))
        except ValueError:  # a time the journal did not write: nothing to match it by
            return False
        rows = self.store.query(LogQuery(limit=_SAME_TIME, since=since, until=until))
        return any(row.record.request_id == entry.record.request_id for row in rows)

    def _move_aside(
        self, name: str, problem: str, size: int, offset: int, collected: int
    ) -> str | None:
        """Move `name` to a name that has no position (journal.reuse), the store holding
        its first `collected` bytes; the new name, or None if it was not moved (another
        collector moved it, or it cannot be: then none of it is read, and /ready says why)."""
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


def _line_ends(path: Path, limit: int) -> list[int]:
    """Where each whole line within the first `limit` bytes of `path` ends (after its
    newline)."""
    ends: list[int] = []
    done = 0
    with path.open("rb") as file:
        while done < limit:
            block = file.read(min(1 << 20, limit - done))
            if not block:
                break
            at = block.find(b"\n")
            while at >= 0:
                ends.append(done + at + 1)
                at = block.find(b"\n", at + 1)
            done += len(block)
    return ends


def _day(name: str) -> date | None:
    """The UTC day a journal file's name carries (None: not a journal file's name)."""
    match = FILE_RE.match(name)
    try:
        return date.fromisoformat(match.group(1)) if match else None
    except ValueError:  # 2026-13-45 has the pattern's shape
        return None
