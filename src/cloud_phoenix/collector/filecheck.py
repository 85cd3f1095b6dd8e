"""Whether a journal file is the one the store read up to its position.

A file's name is its identity in the store. The file is the one the store read if its
first record and the line that ends at the store's position are the store's. If its first
record is not, another file had its name (an instance name used twice, journal.reuse): the
store holds none of it. If only the end is not, or the file is shorter than the position,
a crash cut it short before the disk had its end, and new lines may have followed: the
store holds it up to the cut, which a binary search over its lines finds (nothing after
the cut is the store's: its records are new). Either way lines read on from the position
would be skipped, or land on positions the store has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cloud_phoenix.journal import JournalEntry, format_time, parse_time, read_chunk
from cloud_phoenix.store.base import LogQuery, LogStore

LINE_MAX = 64 << 10  # bytes that hold a whole journal line: each value is capped
SAME_TIME = 100  # records of one microsecond looked through for a request id


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why a file is not the one the store read, and how many of its first bytes the store
    holds where they stand (0: none, the file is another's)."""

    problem: str
    collected: int


class FileCheck:
    """Tells the files the store read from those it did not, asking the store about a few
    of their records; remembers its answer for each file (by device and inode)."""

    def __init__(self, store: LogStore, journal_dir: Path) -> None:
        self.store = store
        self.journal_dir = journal_dir
        self._checked: dict[str, tuple[int, int]] = {}
        # Those found not to be the store's, kept while they cannot be moved: not searched
        # again on every pass.
        self._mismatches: dict[str, tuple[tuple[int, int], Mismatch]] = {}

    def mismatch(self, name: str, stat: os.stat_result, offset: int) -> Mismatch | None:
        """Why `name` cannot be read on from the store's position `offset`, and how much
        of it the store holds; None if it can (looked at once per file)."""
        identity = (stat.st_dev, stat.st_ino)
        shorter = stat.st_size < offset
        if not shorter and self._checked.get(name) == identity:
            return None
        known = self._mismatches.get(name)
        if known is not None and known[0] == identity:
            return known[1]  # one that could not be moved yet: not searched on every pass
        mismatch = self._find(name, shorter, stat.st_size, offset)
        if mismatch is None:
            self._checked[name] = identity
        else:
            self._mismatches[name] = (identity, mismatch)
        return mismatch

    def _find(self, name: str, shorter: bool, size: int, offset: int) -> Mismatch | None:
        """mismatch's answer, looked for in the file and the store."""
        path = self.journal_dir / name
        entries = read_chunk(path, 0, 1, max_bytes=LINE_MAX).entries
        first = entries[0] if entries and entries[0].offset < offset else None
        if first is not None and not self._stored(first):
            return Mismatch(f"its first record (at {first.pos}) is not in the store", 0)
        if not shorter and self._ends_as_read(path, offset):
            return None
        what = f"it holds {size} bytes, fewer than the {offset} the store has read"
        if not shorter:
            what = f"the line the store read up to byte {offset} is not there"
        if first is None:  # no record tells whose file it is: none of it is the store's
            return Mismatch(f"{what} of a file of that name", 0)
        return Mismatch(f"{what} of it: a crash cut it short", self._held_prefix(path, offset))

    def _ends_as_read(self, path: Path, offset: int) -> bool:
        """Whether the line that ends at `offset` is the store's record (or a malformed
        line, which tells nothing)."""
        start = max(0, offset - LINE_MAX)
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
        entries = read_chunk(path, start, 1, max_bytes=LINE_MAX).entries
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
        rows = self.store.query(LogQuery(limit=SAME_TIME, since=since, until=until))
        return any(row.record.request_id == entry.record.request_id for row in rows)


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
