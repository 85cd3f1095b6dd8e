"""How far a store is behind the journal: bytes not yet collected, and the age of the oldest
record among them (what /ready, /checkdb and /metrics report)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cloud_phoenix.journal import first_record_time, journal_files, parse_time


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the store is behind the journal."""

    bytes: int
    seconds: float
    files_behind: int


def measure_lag(positions: dict[str, int], journal_dir: Path, now: datetime) -> Lag:
    """Bytes not yet collected, and the age of the oldest record not yet collected;
    `positions` are the store's (file name -> byte offset collected up to)."""
    behind = 0
    files = 0
    oldest: str | None = None
    for name in journal_files(journal_dir):
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
    seconds = 0.0
    if oldest is not None:
        try:
            seconds = max(0.0, (now - parse_time(oldest)).total_seconds())
        except ValueError:
            seconds = 0.0
    return Lag(behind, seconds, files)
