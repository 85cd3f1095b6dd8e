"""Verify, then restore: a backup is checked whole before anything is touched.

`verify_backup` reads the manifest (its own checksum included, and the names of its
files: the backup's own, never a path) and hashes every file it lists; a corrupt,
truncated, edited or crafted backup is refused with BadBackup (exit DATAERR) and nothing
changes. Each backend then checks the dump's content against the manifest's
counts before it writes to the target (see `snapshot`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.backup.catalog import check_artefact
from cloud_phoenix.backup.errors import (
    NOTHING_CHANGED,
    BackupError,
    BadBackup,
)
from cloud_phoenix.backup.manifest import (
    ID_RE,
    MANIFEST_SUFFIX,
    Manifest,
    manifest_path,
    mark_verified,
    read_manifest,
)
from cloud_phoenix.backup.snapshot import (
    Progress,
    backend_for,
    backend_name,
    no_progress,
    source_name,
)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore put where: the backup, the target (no password) and its counts after."""

    manifest: Manifest
    target: str
    records: int
    events: int


def locate(file: str | Path, folder: Path) -> Path:
    """The manifest of the backup that `file` names: any of its files, or its bare id
    (looked up in `folder` when it is not a path that exists)."""
    path = Path(file)
    if not path.exists() and len(path.parts) == 1:
        path = folder / path.name
    match = ID_RE.match(path.name)
    manifest = path.with_name(match.group(1) + MANIFEST_SUFFIX) if match else path
    if not path.exists() and not manifest.exists():
        raise BackupError(
            f"{file}: no such backup (list them with `phoenix backups`)", exitcodes.NOINPUT
        )
    if not match:
        raise BadBackup(
            f"{file} is not a phoenix backup (names start phoenix-YYYYmmddTHHMMSSZ): "
            f"{NOTHING_CHANGED}"
        )
    return manifest


def verify_backup(manifest_file: Path, progress: Progress = no_progress) -> Manifest:
    """The manifest, once it and every file it lists have been checked; BadBackup otherwise."""
    try:
        manifest = read_manifest(manifest_file)
        for artefact in manifest.artefacts:
            problem = check_artefact(
                manifest_file.parent,
                artefact,
                deep=True,
                tick=lambda done, total: progress("checksum", done, total),
            )
            if problem:
                raise BadBackup(problem)
    except BadBackup as exc:
        raise type(exc)(f"{exc}: {NOTHING_CHANGED}") from None
    return manifest


def restore_backup(
    manifest_file: Path, into_url: str, progress: Progress = no_progress
) -> RestoreResult:
    """Verify the backup, then load its database into `into_url` (replacing its tables)."""
    manifest = verify_backup(manifest_file, progress)
    kind = backend_name(into_url)
    if kind != manifest.backend:
        raise BackupError(
            f"{manifest.id} is a {manifest.backend} backup and cannot be restored into a "
            f"{kind} database: give --into a {manifest.backend} URL; {NOTHING_CHANGED}",
            exitcodes.USAGE,
        )
    dump = manifest_file.parent / manifest.database.file
    restored = backend_for(into_url).restore(dump, into_url, manifest, progress)
    target = source_name(into_url)
    # More than the manifest is normal in a live target: the collector replays the journal
    # from the restored positions at once. Fewer means something did not load.
    if restored.records < manifest.records or restored.events < manifest.events:
        raise BadBackup(
            f"after the restore {target} holds {restored.records} records and "
            f"{restored.events} events; the manifest says {manifest.records} and "
            f"{manifest.events}"
        )
    return RestoreResult(manifest, target, restored.records, restored.events)


def verify_by_restore(
    folder: Path,
    manifest: Manifest,
    source_url: str,
    clock: Callable[[], datetime],
    progress: Progress = no_progress,
) -> Manifest:
    """Restore into a scratch database beside the source, compare the counts exactly, and
    record the outcome in the manifest (`verified_at` or `verify_error`)."""
    with backend_for(source_url).scratch(source_url, folder) as scratch_url:
        try:
            result = restore_backup(manifest_path(folder, manifest.id), scratch_url, progress)
            if (result.records, result.events) != (manifest.records, manifest.events):
                raise BadBackup(
                    f"the scratch restore holds {result.records} records and {result.events} "
                    f"events; the manifest says {manifest.records} and {manifest.events}"
                )
        except BadBackup as exc:
            mark_verified(folder, manifest, clock(), error=str(exc))
            raise
    return mark_verified(folder, manifest, clock())
