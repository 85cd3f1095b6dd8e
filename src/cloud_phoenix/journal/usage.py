"""What the journal takes on its volume, and what is left there: once the volume is full,
requests can no longer be recorded (/metrics reports it, so an alert can come first)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cloud_phoenix.journal import journal_files
from cloud_phoenix.journal.reuse import moved_names


@dataclass(frozen=True, slots=True)
class JournalUsage:
    """The journal's files and bytes; the free and whole size of the file system it is on
    (free: what this user may still write); names moved aside (journal.reuse)."""

    files: int
    bytes: int
    disk_free: int
    disk_size: int
    moved: int


def measure_usage(journal_dir: Path) -> JournalUsage:
    """The journal's use of its volume now; all zeros while there is no journal folder."""
    try:
        disk = os.statvfs(journal_dir)
    except FileNotFoundError:
        return JournalUsage(0, 0, 0, 0, 0)
    files = 0
    total = 0
    for name in journal_files(journal_dir):
        try:
            total += (journal_dir / name).stat().st_size
        except FileNotFoundError:  # pruned meanwhile
            continue
        files += 1
    return JournalUsage(
        files,
        total,
        disk.f_bavail * disk.f_frsize,
        disk.f_blocks * disk.f_frsize,
        len(moved_names(journal_dir)),
    )
