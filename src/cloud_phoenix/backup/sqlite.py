"""SQLite snapshots: the online backup API into a temp file, then gzip.

The backup runs inside a read transaction held on the source: in WAL mode that pins one
consistent snapshot while the application and the collector keep writing (and without it
a writer would restart a page-by-page backup at every commit). The copy is switched to the
rollback journal, so the dump is one self-contained file, and counted before compression.

A restore goes the other way through the same API: the dump is decompressed and checked
(integrity, counts against the manifest) in a temp file beside the target, its record
counter counted afresh, and only then copied into the target in one write transaction. A
running stack can stay up: SQLite locks the target while it is replaced, and its
connections see the restored content after. Never a file rename over a live database,
whose -wal file would then belong to another database.

The decompression stops one read past the size the manifest declares (a bomb is refused:
BadBackup) and never goes beyond the free space (CannotWrite), which alone bounds a manifest
written before sizes were declared.
"""

from __future__ import annotations

import gzip
import os
import shutil
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.backup.errors import (
    NOTHING_CHANGED,
    BackupError,
    BadBackup,
    CannotWrite,
    SourceUnavailable,
)
from cloud_phoenix.backup.files import (
    CHUNK,
    FILE_MODE,
    BoundedGzip,
    cannot_write,
    copy_stream,
    temp_path,
)
from cloud_phoenix.backup.manifest import Artefact, Manifest
from cloud_phoenix.backup.snapshot import Progress, Restored, Snapshot
from cloud_phoenix.store import StoreError
from cloud_phoenix.store.sqlite import SQLiteStore, create_schema

FORMAT = "sqlite-gzip"
PAGES_PER_STEP = 1024


def dump_format(url: str) -> str:
    return FORMAT


def database_path(url: str) -> Path:
    try:
        return SQLiteStore.from_url(url).path
    except StoreError as exc:
        raise BackupError(str(exc), exitcodes.USAGE) from None


def dump(url: str, final: Path, progress: Progress) -> Snapshot:
    source = database_path(url)
    if not source.is_file():
        raise SourceUnavailable(
            f"no SQLite database at {source}: nothing to back up (check DB_CONNECTION_STRING; "
            "the file appears when `phoenix up`, `serve` or `collect` first runs)"
        )
    raw = final.with_name(temp_path(final).name + ".sqlite3")
    try:
        records, events, positions = _snapshot(source, raw, progress)
        expanded = _compress(raw, temp_path(final), progress)
    finally:
        _remove_database(raw)
    tool = f"sqlite3 {sqlite3.sqlite_version}"
    return Snapshot(FORMAT, records, events, positions, tool, expanded)


def restore(dump: Path, url: str, manifest: Manifest, progress: Progress) -> Restored:
    target = database_path(url)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(target.parent, exc) from None
    raw = target.with_name(f".tmp-restore-{os.getpid()}-{target.name}")
    try:
        _decompress(dump, manifest.database, raw, progress)
        check = _connect(raw)
        try:
            _check_integrity(check, dump.name)
            records, events, _ = _counts(check)
            if (records, events) != (manifest.records, manifest.events):
                raise BadBackup(
                    f"{dump.name} holds {records} records and {events} events, the manifest "
                    f"says {manifest.records} and {manifest.events}: mismatched"
                )
            _recount(check, dump.name)
        finally:
            check.close()
        source, dest = _connect(raw), _connect(target)
        try:
            _copy(source, dest, progress, "restore", target)
            records, events, _ = _counts(dest)
        finally:
            source.close()
            dest.close()
    finally:
        _remove_database(raw)
    return Restored(records, events)


@contextmanager
def scratch(url: str, folder: Path) -> Iterator[str]:
    path = folder / f".tmp-verify-{os.getpid()}.sqlite3"
    try:
        yield f"sqlite:///{path}"
    finally:
        _remove_database(path)


def _remove_database(path: Path) -> None:
    """A scratch database file and whatever journal SQLite left beside it."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30, isolation_level=None)


def _snapshot(source: Path, raw: Path, progress: Progress) -> tuple[int, int, dict[str, int]]:
    try:
        src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise SourceUnavailable(f"cannot open SQLite database {source}: {exc}") from None
    try:
        src.isolation_level = None
        try:
            src.execute("BEGIN")
            src.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"cannot read SQLite database {source}: {exc}") from None
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        os.close(fd)
        dest = _connect(raw)
        try:
            _copy(src, dest, progress, "snapshot", raw.parent)
            dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
            return _counts(dest)
        finally:
            dest.close()
    finally:
        src.close()


def _copy(
    src: sqlite3.Connection, dest: sqlite3.Connection, progress: Progress, stage: str, where: Path
) -> None:
    def step(_status: int, remaining: int, total: int) -> None:
        progress(stage, total - remaining, total)

    try:
        src.backup(dest, pages=PAGES_PER_STEP, progress=step)
    except sqlite3.Error as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            raise CannotWrite(
                f"cannot write {where}: the disk is full; free some space. "
                "Earlier backups are intact"
            ) from None
        raise BackupError(f"SQLite backup into {where} failed: {exc}") from None


def _counts(conn: sqlite3.Connection) -> tuple[int, int, dict[str, int]]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    records = conn.execute("SELECT count(*) FROM logs").fetchone()[0] if "logs" in tables else 0
    events = conn.execute("SELECT count(*) FROM events").fetchone()[0] if "events" in tables else 0
    positions: dict[str, int] = {}
    if "journal_positions" in tables:
        rows = conn.execute('SELECT file, "offset" FROM journal_positions').fetchall()
        positions = {str(file): int(offset) for file, offset in rows}
    return int(records), int(events), positions


def _recount(conn: sqlite3.Connection, name: str) -> None:
    """Give the copy the current schema and a record counter that agrees with its records,
    whatever the backup held (a backup from before the counter has none)."""
    try:
        create_schema(conn, recount=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot prepare {name} for the restore: {exc}") from None


def _check_integrity(conn: sqlite3.Connection, name: str) -> None:
    try:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BadBackup(f"{name} does not hold a SQLite database: {exc}") from None
    if result != "ok":
        raise BadBackup(f"{name} holds a damaged SQLite database: {result}")


def _compress(raw: Path, target: Path, progress: Progress) -> int:
    """Gzip the snapshot into `target`; returns the snapshot's size (the manifest's
    `expanded`)."""
    total = raw.stat().st_size
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        # mtime=0: the same database compresses to the same bytes.
        with (
            raw.open("rb") as src,
            gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz,
        ):
            done = copy_stream(src, gz, total, lambda n, all_: progress("compress", n, all_))
        out.flush()
        os.fsync(out.fileno())
    return done


def _decompress(dump: Path, artefact: Artefact, raw: Path, progress: Progress) -> None:
    declared = artefact.expanded
    free = shutil.disk_usage(raw.parent).free
    if declared is not None and declared > free:
        raise CannotWrite(
            f"{dump.name} expands to {declared} bytes and {raw.parent} has {free} bytes free: "
            f"free some space, or restore --into a database on a larger disk; {NOTHING_CHANGED}"
        )
    over: BackupError
    if declared is None:  # a manifest from before sizes were declared: the disk is the bound
        limit = free
        over = CannotWrite(
            f"{dump.name} expands beyond the {free} bytes free in {raw.parent}: free some "
            f"space, or restore --into a database on a larger disk; {NOTHING_CHANGED}"
        )
    else:
        limit = declared
        over = BadBackup(
            f"{dump.name} expands beyond the {declared} bytes its manifest declares "
            f"(damaged, or a decompression bomb), refused: {NOTHING_CHANGED}"
        )
    total = dump.stat().st_size
    try:
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    except OSError as exc:
        raise cannot_write(raw.parent, exc) from None
    with os.fdopen(fd, "wb") as out:
        try:
            with BoundedGzip(dump, limit, over) as gz:
                while block := gz.read(CHUNK):
                    out.write(block)
                    progress("decompress", gz.packed_done, total)
        except (OSError, EOFError, zlib.error) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.errno:
                raise cannot_write(raw.parent, exc) from None
            raise BadBackup(f"{dump.name} cannot be decompressed ({exc}): it is damaged") from None
    if declared is not None and gz.done != declared:
        raise BadBackup(
            f"{dump.name} expands to {gz.done} bytes, its manifest declares {declared}: mismatched"
        )
