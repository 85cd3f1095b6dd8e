"""Files that appear whole or not at all: written under a temp name, fsynced, renamed.

Every file of a backup is written as `.tmp-<name>` in the backups folder itself (the same
file system, so the rename is atomic), with mode 0600, fsynced, then renamed and the
folder fsynced. A crash or a full disk leaves only `.tmp-*` files, which never look like
a backup and are removed by the next run.

A backup's files are read without following a link (`O_NOFOLLOW`), and a gzip dump is
expanded through `BoundedGzip`, which stops one read past the size it may reach.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

from cloud_phoenix.backup.errors import BackupError, CannotWrite

TEMP_PREFIX = ".tmp-"
FILE_MODE = 0o600
FOLDER_MODE = 0o700
CHUNK = 1 << 20

# What an unwritable destination looks like; anything else is a bug or the source's fault.
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)

Tick = Callable[[int, int], None]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def temp_path(final: Path) -> Path:
    return final.with_name(TEMP_PREFIX + final.name)


def cannot_write(where: Path, exc: OSError) -> CannotWrite:
    """The message for a write that failed: disk full reads differently from no access."""
    reason = exc.strerror or str(exc)
    if exc.errno in {errno.ENOSPC, errno.EDQUOT}:
        hint = "free some space (or lower PHOENIX_BACKUP_RETENTION_DAYS)"
    else:
        hint = "make the folder writable by this user, or set PHOENIX_HOME"
    return CannotWrite(f"cannot write {where}: {reason}; {hint}. Earlier backups are intact")


def prepare_folder(folder: Path) -> None:
    """Create the backups folder (0700) and prove it can be written, or raise CannotWrite."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        probe = folder / f".probe-{os.getpid()}"  # not .tmp-: a running backup removes those
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise cannot_write(folder, exc) from None


@contextmanager
def staged(final: Path) -> Iterator[BinaryIO]:
    """A new 0600 file at `final`'s temp name; fsynced on success, removed on any error.

    The caller renames it into place with `commit` once every file of the backup is ready.
    """
    temp = temp_path(final)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    except OSError as exc:
        raise cannot_write(final.parent, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def create_private(path: Path) -> None:
    """Create `path` empty with mode 0600 (a tool then writes into it); it must not exist."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(final: Path) -> None:
    """Rename `final`'s staged temp file into place and make the rename durable."""
    os.replace(temp_path(final), final)
    fsync_folder(final.parent)


def write_atomically(final: Path, data: bytes) -> None:
    """Write `data` to `final` whole or not at all (0600); CannotWrite if the disk refuses."""
    try:
        with staged(final) as handle:
            handle.write(data)
        commit(final)
    except OSError as exc:
        temp_path(final).unlink(missing_ok=True)
        raise cannot_write(final.parent, exc) from None


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_file(path: Path) -> BinaryIO:
    """`path` opened for reading; OSError (ELOOP) if it is a link."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def digest(path: Path, tick: Tick | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of a file, reading it once."""
    sha = hashlib.sha256()
    size = 0
    with open_file(path) as handle:
        total = os.fstat(handle.fileno()).st_size
        while block := handle.read(CHUNK):
            sha.update(block)
            size += len(block)
            if tick:
                tick(size, total)
    return size, sha.hexdigest()


def copy_stream(source: Readable, target: Writable, total: int, tick: Tick | None) -> int:
    """Copy until EOF, reporting bytes done of `total`; returns the bytes copied."""
    done = 0
    while block := source.read(CHUNK):
        target.write(block)
        done += len(block)
        if tick:
            tick(done, total)
    return done


class BoundedGzip:
    """What a gzip file expands to, read piece by piece, never past `limit` bytes: the read
    that would go beyond raises `over` instead, so a bomb costs at most `limit` bytes of
    output and one piece of memory."""

    def __init__(self, path: Path, limit: int, over: BackupError) -> None:
        self._packed = open_file(path)
        self._gzip = gzip.GzipFile(fileobj=self._packed, mode="rb")
        self.limit = limit
        self.done = 0  # bytes expanded so far
        self._over = over

    @property
    def packed_done(self) -> int:
        """Bytes of the gzip file itself consumed so far."""
        return self._packed.tell()

    def read(self, size: int = CHUNK) -> bytes:
        return self._count(self._gzip.read(self._allowed(size)))

    def readline(self, size: int) -> bytes:
        return self._count(self._gzip.readline(self._allowed(size)))

    def _allowed(self, size: int) -> int:
        return min(size, self.limit - self.done + 1)  # one byte more shows an excess

    def _count(self, data: bytes) -> bytes:
        self.done += len(data)
        if self.done > self.limit:
            raise self._over
        return data

    def close(self) -> None:
        try:
            self._gzip.close()
        finally:
            self._packed.close()

    def __enter__(self) -> BoundedGzip:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def remove_stale_temps(folder: Path) -> list[str]:
    """Delete `.tmp-*` files left by a run that crashed (call only while holding the lock)."""
    removed = []
    for path in folder.glob(TEMP_PREFIX + "*"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
