"""What the collector deletes: journal files past the retention, and positions of files
long gone. Pure: values in, values out.

Retention counts calendar UTC days, today included, as the backups count them: with
`retention_days` 7, a journal file is kept while the day in its name is one of the last 7.

- A journal file is deleted only once the store holds all of it (its position is its
  size): the database, which the backups keep, then has every line. Where a daily backup
  runs beside the collector it prunes the journal itself, once a file is in its archive,
  and the collector deletes none (Collector.prune_journal).
- A position is forgotten once its day is twice the retention ago and its file is not in
  this journal: by then every instance has deleted that file. Should one still have it,
  it reads it again from the start and stores nothing twice (a record's position is its
  key), so a mistake here costs a re-read, never a record.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True, slots=True)
class JournalFile:
    """One file of this journal: its name, its UTC day, its size and the store's position."""

    name: str
    day: date
    size: int
    collected: int


def first_kept_day(today: date, retention_days: int) -> date:
    """The oldest UTC day still kept (today counts as one)."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    return today - timedelta(days=retention_days - 1)


def files_to_delete(files: Sequence[JournalFile], today: date, retention_days: int) -> list[str]:
    """The files older than the retention that the store holds all of, oldest first (a
    journal file's name begins with its day)."""
    first = first_kept_day(today, retention_days)
    return sorted(item.name for item in files if item.day < first and item.collected == item.size)


def positions_to_forget(
    stored: Mapping[str, date], local: Collection[str], today: date, retention_days: int
) -> list[str]:
    """The positions (file name -> its day) of files twice the retention old and not here."""
    first = first_kept_day(today, 2 * retention_days)
    return sorted(name for name, day in stored.items() if day < first and name not in local)
