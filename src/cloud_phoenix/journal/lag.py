"""How far a store is behind the journal: bytes not yet collected, the age of the oldest
record among them, and the files the store has read further than they go (what /ready,
/checkdb and /metrics report)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cloud_phoenix.journal import first_record_time, journal_files, parse_time

# The store's positions of the files named (LogStore.positions): file name -> byte offset.
PositionReader = Callable[[Collection[str]], dict[str, int]]


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the store is behind the journal. `shorter`: files shorter than the store's
    position for their name (another file had the name, or a crash cut it short:
    journal.reuse): the collector moves each to a new name on its next pass, and reads
    none of it until then."""

    bytes: int
    seconds: float
    files_behind: int
    shorter: tuple[str, ...] = ()


def measure_lag(read_positions: PositionReader, journal_dir: Path, now: datetime) -> Lag:
    """Bytes not yet collected, and the age of the oldest record not yet collected, from
    the store's positions of the files in `journal_dir` (only theirs are read)."""
    names = journal_files(journal_dir)
    positions = read_positions(names) if names else {}
    behind = 0
    files = 0
    oldest: str | None = None
    shorter: list[str] = []
    for name in names:
        path = journal_dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            continue
        offset = positions.get(name, 0)
        if size > offset:
            behind += size - offset
            files += 1
            if oldest is None:
                oldest = first_record_time(path, offset)
        elif size < offset:
            shorter.append(name)
    seconds = 0.0
    if oldest is not None:
        try:
            seconds = max(0.0, (now - parse_time(oldest)).total_seconds())
        except ValueError:
            seconds = 0.0
    return Lag(behind, seconds, files, tuple(shorter))
