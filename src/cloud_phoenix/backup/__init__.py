"""Backups: database snapshots, journal and log archives, rotation, verified restores.

`phoenix backup` (and daily inside `phoenix up`, at PHOENIX_BACKUP_AT local time) takes a
consistent snapshot of the serving database (SQLite online backup API, `pg_dump`, or
`mongodump`/a streamed export), archives the closed journal days and the server logs,
writes a manifest with sha256 checksums and counts, then prunes what is older than
PHOENIX_BACKUP_RETENTION_DAYS (never the newest good backup, never an unarchived journal
file). Every file is 0600 and appears whole or not at all. `phoenix restore` verifies
before it touches anything.

Modules: `plan` (the pure prune plan), `schedule` (daily timing), `runner` (a backup),
`restore`, `manifest`, `catalog` (the folder), `archive`, `snapshot` with one module per
backend (`sqlite`, `postgres`, `mongodb`), `files` (atomic writes), `errors`.
"""

from __future__ import annotations

from cloud_phoenix.backup.catalog import CatalogEntry, scan
from cloud_phoenix.backup.errors import (
    BackupBusy,
    BackupError,
    BadBackup,
    CannotWrite,
    SourceUnavailable,
)
from cloud_phoenix.backup.manifest import Artefact, Manifest
from cloud_phoenix.backup.plan import (
    BackupInfo,
    JournalDay,
    PrunePlan,
    RetentionPolicy,
    newest_good,
    plan_prune,
)
from cloud_phoenix.backup.restore import (
    RestoreResult,
    locate,
    restore_backup,
    verify_backup,
    verify_by_restore,
)
from cloud_phoenix.backup.runner import (
    BackupResult,
    Notify,
    RecordEvent,
    local_now,
    prune,
    run_backup,
)
from cloud_phoenix.backup.schedule import DailyBackups, next_run
from cloud_phoenix.backup.snapshot import Progress

__all__ = [
    "Artefact",
    "BackupBusy",
    "BackupError",
    "BackupInfo",
    "BackupResult",
    "BadBackup",
    "CannotWrite",
    "CatalogEntry",
    "DailyBackups",
    "JournalDay",
    "Manifest",
    "Notify",
    "Progress",
    "PrunePlan",
    "RecordEvent",
    "RestoreResult",
    "RetentionPolicy",
    "SourceUnavailable",
    "local_now",
    "locate",
    "newest_good",
    "next_run",
    "plan_prune",
    "prune",
    "restore_backup",
    "run_backup",
    "scan",
    "verify_backup",
    "verify_by_restore",
]
