"""What is in the backups folder: each backup's files, its manifest, and whether it is good.

Only regular files count, looked at without following links: a link in the folder is no
part of any backup, and its target is never looked at (its size would tell what it is).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cloud_phoenix.backup.errors import BadBackup, UnsafeManifest
from cloud_phoenix.backup.files import Tick, digest
from cloud_phoenix.backup.manifest import (
    ID_RE,
    MANIFEST_SUFFIX,
    Artefact,
    Manifest,
    id_time,
    read_manifest,
)
from cloud_phoenix.backup.plan import BackupInfo


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One backup: its id, time, manifest (None if unreadable), files, and what is wrong;
    `unsafe` when its manifest names a file that is not the backup's own."""

    id: str
    created_at: datetime
    manifest: Manifest | None
    files: tuple[Path, ...]
    problem: str | None  # None: good
    unsafe: bool = False

    @property
    def good(self) -> bool:
        return self.problem is None

    @property
    def size(self) -> int:
        return sum(_regular_size(path) or 0 for path in self.files)

    def info(self) -> BackupInfo:
        return BackupInfo(self.id, self.created_at, self.good)


def check_artefact(
    folder: Path, artefact: Artefact, deep: bool, tick: Tick | None = None
) -> str | None:
    """Why `artefact` does not match its manifest entry, or None. `deep` also hashes it.

    Its name is the backup's own (`read_manifest` checked it); UnsafeManifest if the file
    under that name is a link, a folder or a device rather than a regular file.
    """
    path = folder / artefact.file
    try:
        info = path.lstat()
    except FileNotFoundError:
        return f"{artefact.file} is missing"
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeManifest(
            f"{artefact.file} is not a regular file (a link, a folder or a device), refused"
        )
    size = info.st_size
    if size < artefact.size:
        return f"{artefact.file} is truncated: {size} of {artefact.size} bytes"
    if size > artefact.size:
        return f"{artefact.file} is corrupt: {size} bytes, the manifest says {artefact.size}"
    if deep:
        _, sha = digest(path, tick)
        if sha != artefact.sha256:
            return (
                f"{artefact.file} is corrupt: its sha256 is {sha[:16]}…, "
                f"the manifest says {artefact.sha256[:16]}…"
            )
    return None


def scan(folder: Path, deep: bool = False) -> list[CatalogEntry]:
    """Every backup in `folder`, oldest first. Cheap unless `deep` (which hashes every file)."""
    groups: dict[str, list[Path]] = {}
    try:
        paths = sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    for path in paths:
        match = ID_RE.match(path.name)
        if match and _regular_size(path) is not None:
            groups.setdefault(match.group(1), []).append(path)
    entries = []
    for backup, files in groups.items():
        created = id_time(backup)
        if created is None:  # pragma: no cover - the regex above guarantees a time
            continue
        manifest: Manifest | None = None
        manifest_file = folder / (backup + MANIFEST_SUFFIX)
        unsafe = False
        if manifest_file not in files:
            problem: str | None = "incomplete: no manifest (a run cut short, or it was deleted)"
        else:
            try:
                manifest = read_manifest(manifest_file)
                problem = _problem(folder, manifest, deep)
                created = manifest.created
            except BadBackup as exc:
                problem, unsafe = str(exc), isinstance(exc, UnsafeManifest)
        entries.append(CatalogEntry(backup, created, manifest, tuple(files), problem, unsafe))
    return sorted(entries, key=lambda entry: (entry.created_at, entry.id))


def _problem(folder: Path, manifest: Manifest, deep: bool) -> str | None:
    if manifest.verify_error:
        return f"failed --verify: {manifest.verify_error}"
    for artefact in manifest.artefacts:
        problem = check_artefact(folder, artefact, deep)
        if problem:
            return problem
    return None


def _regular_size(path: Path) -> int | None:
    """The size of a regular file, or None for anything else (a link is not followed)."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None
