"""The logs archive of a backup: closed journal days, and the server logs rotated for it.

Journal files (`access-YYYY-MM-DD.jsonl`, one per UTC day) go into the archive of the
first good backup after their day has closed (a day before today, UTC), once; the raw
file stays until the prune plan deletes it (see `plan`).

Server logs (`PHOENIX_HOME/logs/*.log`: phoenix, gunicorn, haproxy, collector) are not
daily files, and their writers keep them open (O_APPEND) for as long as they run, so they
cannot be renamed away. Each backup rotates them by copy-then-truncate into an immutable
`NAME.log.<backup time>` beside them; the archive takes every such rotated file, and they
are deleted once the archive holding them is committed. A backup that fails leaves them
for the next one: no line is archived twice or dropped. The only gap is logrotate's
`copytruncate` one, narrowed to the instant between the last size check and the truncate.
A log's lines thus live in one daily archive and expire with it, after the retention.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cloud_phoenix.backup.files import CHUNK, FILE_MODE, fsync_file, temp_path
from cloud_phoenix.backup.snapshot import Progress
from cloud_phoenix.journal import FILE_RE, journal_files

log = logging.getLogger(__name__)

FORMAT = "tar-gzip"
ROTATED_RE = re.compile(r"^.+\.log\.\d{8}T\d{6}Z(?:-\d+)?$")


@dataclass(frozen=True, slots=True)
class ArchiveContent:
    """What went into an archive: journal days (YYYY-MM-DD) and rotated server logs."""

    journal_days: tuple[str, ...]
    logs: tuple[Path, ...]


def journal_days(journal_dir: Path) -> dict[date, Path]:
    """Every journal file by its UTC day."""
    found = {}
    for name in journal_files(journal_dir):
        match = FILE_RE.match(name)
        if match:
            found[date.fromisoformat(match.group(1))] = journal_dir / name
    return found


def rotate_logs(logs_dir: Path, stamp: str) -> list[Path]:
    """Copy each non-empty `*.log` to `*.log.<stamp>` and truncate it; returns the copies.

    A log that cannot be rotated (disk full, permissions) is left as it is, with a warning:
    its lines stay in place for the next backup.
    """
    rotated = []
    for path in sorted(logs_dir.glob("*.log")) if logs_dir.is_dir() else []:
        try:
            copy = _copy_truncate(path, path.with_name(f"{path.name}.{stamp}"))
        except OSError as exc:
            log.warning("cannot rotate %s (kept whole for the next backup): %s", path, exc)
            continue
        if copy is not None:
            rotated.append(copy)
    return rotated


def rotated_logs(logs_dir: Path) -> list[Path]:
    """The rotated server logs waiting for an archive, oldest first."""
    if not logs_dir.is_dir():
        return []
    found = [path for path in logs_dir.iterdir() if ROTATED_RE.match(path.name)]
    return sorted(found, key=lambda path: (path.name.rsplit(".", 1)[1], path.name))


def write_archive(
    final: Path, journal: Iterable[Path], logs: Iterable[Path], progress: Progress
) -> ArchiveContent:
    """A tar.gz at `final`'s temp name (0600, fsynced) holding `journal/...` and `logs/...`."""
    members = [(path, f"journal/{path.name}") for path in journal]
    members += [(path, f"logs/{path.name}") for path in logs]
    total = sum(path.stat().st_size for path, _ in members)
    done = 0
    target = temp_path(final)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz", compresslevel=6) as tar:
        for path, arcname in members:
            with path.open("rb") as handle:
                info = tar.gettarinfo(arcname=arcname, fileobj=handle)
                tar.addfile(info, handle)
            done += info.size
            progress("archive", done, total)
    fsync_file(target)
    days = tuple(
        match.group(1)
        for path, name in members
        if name[0] == "j" and (match := FILE_RE.match(path.name))
    )
    return ArchiveContent(days, tuple(path for path, name in members if name[0] == "l"))


def remove_archived(logs: Iterable[Path]) -> None:
    """Delete rotated logs now safe in a committed archive."""
    for path in logs:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s (it is archived): %s", path, exc)


def _copy_truncate(path: Path, target: Path) -> Path | None:
    try:
        source = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(source).st_size == 0:
            return None
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            copied = 0
            while True:
                block = os.pread(source, CHUNK, copied)
                if block:
                    copied += os.write(out, block)
                    continue
                # At the end, and nothing appended since the last read: truncate now.
                if os.fstat(source).st_size == copied:
                    os.fsync(out)
                    os.ftruncate(source, 0)
                    return target
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        finally:
            os.close(out)
    finally:
        os.close(source)
