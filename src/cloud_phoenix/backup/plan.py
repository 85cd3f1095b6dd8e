"""The prune plan: which backups and journal files to delete. Pure: values in, values out.

Retention counts calendar days, today included: with `retention_days` 7, a backup is kept
while its day (in the time zone of `now`, local time in `phoenix`) is one of the last 7,
and a journal file while its UTC day (the one in its name) is one of the last 7 UTC days.
Whole days rather than ages, so that a daily backup taken a few seconds later than the one
a week before does not make the count 8 one day and 7 the next.

Safety rules, which win over retention:
- the newest good backup is never deleted, however old (a failed run must not leave none);
- a journal file is deleted only if its day is closed, it is inside the logs archive of a
  good backup, and the store had read all of it when the newest good snapshot was taken:
  every deleted line is then both in an archive and in a database snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many calendar days of backups and raw journal files to keep (today included)."""

    retention_days: int = 7

    def __post_init__(self) -> None:
        if self.retention_days < 1:
            raise ValueError(f"retention_days must be at least 1, got {self.retention_days}")


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One backup in the folder: its id, when it was taken (aware), and whether it is good.

    Good: its manifest is intact and every file it lists is there with the recorded size
    (and it did not fail a --verify).
    """

    name: str
    created_at: datetime
    good: bool


@dataclass(frozen=True, slots=True)
class JournalDay:
    """One journal file: its UTC day, whether a good backup archived it, and whether the
    newest good snapshot had collected all of it."""

    day: date
    archived: bool
    collected: bool


@dataclass(frozen=True, slots=True)
class PrunePlan:
    """What to delete, oldest first; `keep_backups` is the rest, for reports."""

    delete_backups: tuple[str, ...]
    delete_journal_days: tuple[date, ...]
    keep_backups: tuple[str, ...]


def newest_good(backups: Sequence[BackupInfo]) -> BackupInfo | None:
    """The most recent good backup, if there is one."""
    good = [backup for backup in backups if backup.good]
    return max(good, key=lambda backup: backup.created_at) if good else None


def plan_prune(
    backups: Sequence[BackupInfo],
    journal: Sequence[JournalDay],
    now: datetime,
    policy: RetentionPolicy,
) -> PrunePlan:
    """Backups and journal days older than the retention, minus what the safety rules keep."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    span = timedelta(days=policy.retention_days - 1)
    first_kept_day = now.date() - span
    protected = newest_good(backups)
    delete: list[BackupInfo] = []
    keep: list[BackupInfo] = []
    for backup in sorted(backups, key=lambda b: (b.created_at, b.name)):
        expired = backup.created_at.astimezone(now.tzinfo).date() < first_kept_day
        (delete if expired and backup is not protected else keep).append(backup)

    first_kept_utc_day = now.astimezone(UTC).date() - span
    delete_days = sorted(
        item.day
        for item in journal
        if item.day < first_kept_utc_day and item.archived and item.collected
    )
    return PrunePlan(
        delete_backups=tuple(backup.name for backup in delete),
        delete_journal_days=tuple(delete_days),
        keep_backups=tuple(backup.name for backup in keep),
    )
