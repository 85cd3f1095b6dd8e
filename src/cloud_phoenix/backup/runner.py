"""`run_backup`: one backup from start to finish, the shell around `plan.plan_prune`.

Under an exclusive lock on the backups folder: remove what a crashed run left (`.tmp-*`),
snapshot the database, rotate the server logs, archive the closed journal days and the
rotated logs, checksum both files, commit them (rename) and write the manifest last. Only
then: delete the rotated logs now archived, `--verify` if asked, and prune. Any failure
before the manifest removes every file of this run, so the folder holds what it held
before: a failed run never touches the earlier backups. A failure is reported through
`notify(title, body)` and `record_event(kind, message, data)` (both optional, both
best-effort) and then raised.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_phoenix.backup.archive import (
    FORMAT as ARCHIVE_FORMAT,
)
from cloud_phoenix.backup.archive import (
    ArchiveContent,
    journal_days,
    remove_archived,
    rotate_logs,
    rotated_logs,
    write_archive,
)
from cloud_phoenix.backup.catalog import CatalogEntry, scan
from cloud_phoenix.backup.errors import BackupBusy, BackupError
from cloud_phoenix.backup.files import (
    WRITE_ERRNOS,
    cannot_write,
    commit,
    digest,
    prepare_folder,
    remove_stale_temps,
    temp_path,
)
from cloud_phoenix.backup.manifest import (
    ARCHIVE_SUFFIX,
    DUMP_SUFFIXES,
    Artefact,
    Manifest,
    backup_id,
    manifest_path,
    write_manifest,
)
from cloud_phoenix.backup.plan import JournalDay, PrunePlan, RetentionPolicy, plan_prune
from cloud_phoenix.backup.restore import verify_by_restore
from cloud_phoenix.backup.snapshot import (
    Progress,
    backend_for,
    backend_name,
    no_progress,
    source_name,
)
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import format_time

log = logging.getLogger(__name__)

Notify = Callable[[str, str], None]  # (title, body)
RecordEvent = Callable[[str, str, dict[str, Any]], None]  # (kind, message, data)


@dataclass(frozen=True, slots=True)
class BackupResult:
    """A committed backup, what was pruned after it, and the housekeeping done."""

    manifest: Manifest
    manifest_path: Path
    pruned: PrunePlan
    removed_temps: tuple[str, ...] = ()


def local_now() -> datetime:
    """Now, aware, in the local time zone: retention counts local calendar days."""
    return datetime.now().astimezone()


def run_backup(
    settings: Settings,
    *,
    verify: bool = False,
    clock: Callable[[], datetime] = local_now,
    notify: Notify | None = None,
    record_event: RecordEvent | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Take a backup of `settings.db_url` into `settings.backups_dir`, then prune.

    Raises BackupError (its `code` is the exit code): SourceUnavailable when the database
    is down or pg_dump is missing, CannotWrite when the folder is unwritable or full,
    BadBackup when `verify` finds the restored counts differ, BackupBusy when another
    backup runs. `clock` returns an aware datetime (tests inject one).
    """
    try:
        result = _backup(settings, verify, clock, progress or no_progress)
    except BackupError as exc:
        _report_failure(settings, exc, notify, record_event)
        raise
    except Exception as exc:  # a bug, or an error nobody foresaw: still say it failed
        error = BackupError(f"backup failed unexpectedly: {exc!r}")
        _report_failure(settings, error, notify, record_event)
        raise error from exc
    manifest = result.manifest
    message = (
        f"backup {manifest.id}: {manifest.records} records, {manifest.events} events, "
        f"{manifest.size} bytes; pruned {len(result.pruned.delete_backups)} backups and "
        f"{len(result.pruned.delete_journal_days)} journal files"
    )
    log.info("%s", message)
    data = {"id": manifest.id, "records": manifest.records, "size": manifest.size}
    _safely(record_event, "backup_created", message, data)
    return result


def _backup(
    settings: Settings, verify: bool, clock: Callable[[], datetime], progress: Progress
) -> BackupResult:
    folder = settings.backups_dir
    prepare_folder(folder)
    with _locked(folder):
        removed = tuple(remove_stale_temps(folder))
        manifest, content = _take(settings, folder, clock, progress)
        if content:
            remove_archived(content.logs)
        if verify:
            manifest = verify_by_restore(folder, manifest, settings.db_url, clock, progress)
        pruned = prune(folder, settings.journal_dir, clock(), settings.backup_retention_days)
    return BackupResult(manifest, manifest_path(folder, manifest.id), pruned, removed)


def _take(
    settings: Settings, folder: Path, clock: Callable[[], datetime], progress: Progress
) -> tuple[Manifest, ArchiveContent | None]:
    """Write and commit one backup; on any failure remove every file of it and raise."""
    started, now = time.monotonic(), clock()
    backend = backend_for(settings.db_url)
    dump_format = backend.dump_format(settings.db_url)
    name = backup_id(now, folder)
    dump_file = folder / (name + DUMP_SUFFIXES[dump_format])
    archive_file = folder / (name + ARCHIVE_SUFFIX)
    ours = (dump_file, archive_file, manifest_path(folder, name))
    committed = False
    try:
        snapshot = backend.dump(settings.db_url, dump_file, progress)
        today = now.astimezone(UTC).date()
        archived = archived_days(scan(folder))
        journal = [
            path
            for day, path in sorted(journal_days(settings.journal_dir).items())
            if day < today and day.isoformat() not in archived
        ]
        rotate_logs(settings.logs_dir, name.removeprefix("phoenix-"))
        logs = rotated_logs(settings.logs_dir)
        content = write_archive(archive_file, journal, logs, progress) if journal or logs else None
        manifest = Manifest(
            id=name,
            created_at=format_time(now),
            backend=backend_name(settings.db_url),
            source=source_name(settings.db_url),
            records=snapshot.records,
            events=snapshot.events,
            database=_artefact(dump_file, snapshot.format, progress, snapshot.expanded),
            archive=_artefact(archive_file, ARCHIVE_FORMAT, progress) if content else None,
            journal_days=content.journal_days if content else (),
            server_logs=tuple(path.name for path in content.logs) if content else (),
            positions=snapshot.positions,
            duration_s=round(time.monotonic() - started, 3),
            tool=snapshot.tool,
        )
        commit(dump_file)
        if content:
            commit(archive_file)
        write_manifest(folder, manifest)
        committed = True
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise cannot_write(folder, exc) from None
        raise BackupError(f"backup failed: {exc}") from None
    finally:
        if not committed:
            for path in ours:
                temp_path(path).unlink(missing_ok=True)
                path.unlink(missing_ok=True)
    return manifest, content


def archived_days(entries: Sequence[CatalogEntry]) -> set[str]:
    """The journal days (YYYY-MM-DD) inside the archive of a good backup."""
    return {
        day
        for entry in entries
        if entry.good and entry.manifest is not None
        for day in entry.manifest.journal_days
    }


def prune(folder: Path, journal_dir: Path, now: datetime, retention_days: int) -> PrunePlan:
    """Apply `plan_prune` to the folder and the journal; deletion errors are logged, not raised."""
    entries = scan(folder)
    good = [entry for entry in entries if entry.good and entry.manifest is not None]
    positions = good[-1].manifest.positions if good and good[-1].manifest else {}
    archived = archived_days(entries)
    files = journal_days(journal_dir)
    journal = [
        JournalDay(day, day.isoformat() in archived, _size(path) <= positions.get(path.name, 0))
        for day, path in files.items()
    ]
    plan = plan_prune(
        [entry.info() for entry in entries], journal, now, RetentionPolicy(retention_days)
    )
    by_id = {entry.id: entry for entry in entries}
    for name in plan.delete_backups:
        # The manifest first: a deletion cut short leaves an "incomplete" backup, never a
        # "good" one with files missing.
        for path in sorted(by_id[name].files, key=lambda p: not p.name.endswith(".json")):
            _remove(path)
    for day in plan.delete_journal_days:
        _remove(files[day])
    return plan


def _artefact(
    final: Path, file_format: str, progress: Progress, expanded: int | None = None
) -> Artefact:
    size, sha = digest(temp_path(final), lambda done, total: progress("checksum", done, total))
    return Artefact(final.name, file_format, size, sha, expanded)


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupBusy(
                f"another backup is running in {folder}: wait for it to finish"
            ) from None
        yield
    finally:
        os.close(fd)


def _report_failure(
    settings: Settings, exc: BackupError, notify: Notify | None, record_event: RecordEvent | None
) -> None:
    log.info("backup failed: %s", exc)  # the caller (CLI, DailyBackups) shows it once
    try:
        good = [entry for entry in scan(settings.backups_dir) if entry.good]
    except OSError:
        good = []
    if good:
        newest = good[-1]
        safe = f"Earlier backups are intact; the newest good one is {newest.id}."
    else:
        safe = "There is no good backup yet."
    try:
        source = source_name(settings.db_url)
    except BackupError:
        source = "(invalid DB_CONNECTION_STRING)"
    body = f"{exc}\n\nHost {socket.gethostname()}, database {source}. {safe}"
    _safely(notify, "phoenix backup failed", body)
    _safely(record_event, "backup_failed", str(exc), {"code": exc.code})


def _safely(callback: Callable[..., None] | None, *args: Any) -> None:
    """A reporting callback must never turn a result into a crash, nor hide the error."""
    if callback is None:
        return
    try:
        callback(*args)
    except Exception:
        log.exception("backup: reporting through %r failed", callback)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot prune %s: %s", path, exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
