"""The manifest: what one backup holds and the checksums that prove it is whole.

A backup is a few files in the backups folder sharing one id, `phoenix-YYYYmmddTHHMMSSZ`
(UTC, the time it was taken; `-2`, `-3`... if two are taken in one second):

    phoenix-20250101T030000Z.db.gz            SQLite: the online-backup copy, gzipped
    phoenix-20250101T030000Z.pgdump           PostgreSQL: pg_dump custom format (compressed)
    phoenix-20250101T030000Z.mongo.jsonl.gz   MongoDB: the collections as extended JSON lines
    phoenix-20250101T030000Z.mongo.archive.gz MongoDB, when mongodump is installed
    phoenix-20250101T030000Z-logs.tar.gz      closed journal days and the server logs
    phoenix-20250101T030000Z.manifest.json    this, written last: no manifest, no backup

The manifest lists each file's size and sha256 (and `expanded`, its size once
decompressed, for the gzip dumps phoenix reads itself), the record, event and
journal-position counts found in the snapshot, the source (never a password), and
`checksum`, the sha256 of the manifest's own canonical JSON: an edited or damaged manifest
is refused as surely as a damaged dump. `verified_at` is set by `phoenix backup --verify`
after a restore into a scratch database matched the counts; `verify_error` when it did not.

The checksum proves the manifest whole, not who wrote it: anyone can recompute it. So a
manifest is trusted with nothing it could abuse. It speaks only for the backup it is named
after, and names only that backup's own files, by the names above (`UnsafeManifest`
otherwise); `expanded` bounds a decompression, and the free disk space bounds that.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloud_phoenix.backup.errors import BadBackup, UnsafeManifest
from cloud_phoenix.backup.files import write_atomically
from cloud_phoenix.journal import format_time, parse_time

FORMAT = "cloud-phoenix-backup"
VERSION = 1
ID_RE = re.compile(r"^(phoenix-(\d{8}T\d{6}Z)(?:-\d+)?)")
MANIFEST_SUFFIX = ".manifest.json"
ARCHIVE_SUFFIX = "-logs.tar.gz"
# Database dump formats and the file suffix of each.
DUMP_SUFFIXES = {
    "sqlite-gzip": ".db.gz",
    "pg_dump-custom": ".pgdump",
    "mongo-jsonl-gzip": ".mongo.jsonl.gz",
    "mongodump-archive-gzip": ".mongo.archive.gz",
}


@dataclass(frozen=True, slots=True)
class Artefact:
    """One file of a backup: its name in the folder, format, size and sha256, and for a
    gzip dump its size once decompressed (None for a tool's own format, and in manifests
    written before phoenix declared it)."""

    file: str
    format: str
    size: int
    sha256: str
    expanded: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything known about one backup; `checksum` is recomputed on every write."""

    id: str
    created_at: str  # journal.format_time form, UTC
    backend: str  # sqlite | postgresql | mongodb
    source: str  # where it came from, without credentials
    records: int
    events: int
    database: Artefact
    archive: Artefact | None = None
    journal_days: tuple[str, ...] = ()  # YYYY-MM-DD of the journal files in the archive
    server_logs: tuple[str, ...] = ()  # the rotated server logs in the archive
    positions: dict[str, int] = field(default_factory=dict)  # journal positions in the snapshot
    duration_s: float = 0.0
    tool: str = ""  # what made the dump, with its version
    verified_at: str | None = None
    verify_error: str | None = None

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)

    @property
    def artefacts(self) -> tuple[Artefact, ...]:
        return (self.database,) if self.archive is None else (self.database, self.archive)

    @property
    def size(self) -> int:
        return sum(artefact.size for artefact in self.artefacts)

    def to_json(self) -> bytes:
        body = _body(self)
        body["checksum"] = _checksum(body)
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


def backup_id(created_at: datetime, folder: Path) -> str:
    """A new id for a backup taken at `created_at`, unused in `folder`."""
    base = f"phoenix-{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    name, n = base, 1
    while (folder / (name + MANIFEST_SUFFIX)).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def id_time(name: str) -> datetime | None:
    """The UTC time in a backup file's name, or None if it is not a backup file."""
    match = ID_RE.match(name)
    if not match:
        return None
    return datetime.strptime(match.group(2), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def manifest_path(folder: Path, backup: str) -> Path:
    return folder / (backup + MANIFEST_SUFFIX)


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write (or replace) the manifest atomically, mode 0600; returns its path."""
    path = manifest_path(folder, manifest.id)
    write_atomically(path, manifest.to_json())
    return path


def mark_verified(
    folder: Path, manifest: Manifest, at: datetime, error: str | None = None
) -> Manifest:
    """Record the outcome of a --verify restore in the manifest."""
    updated = replace(
        manifest,
        verified_at=None if error else format_time(at),
        verify_error=error,
    )
    write_manifest(folder, updated)
    return updated


def read_manifest(path: Path) -> Manifest:
    """Parse and check a manifest; BadBackup says what is wrong with it."""
    try:
        body = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BadBackup(
            f"{path.name} is missing: without it the backup cannot be verified"
        ) from None
    except (OSError, ValueError) as exc:
        raise BadBackup(f"{path.name} cannot be read as JSON ({exc}): it is damaged") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BadBackup(f"{path.name} is not a cloud-phoenix backup manifest")
    if body.get("version") != VERSION:
        raise BadBackup(
            f"{path.name} has format version {body.get('version')!r}; this phoenix reads "
            f"version {VERSION}: restore it with the phoenix release that wrote it"
        )
    stated = body.pop("checksum", None)
    if stated != _checksum(body):
        raise BadBackup(
            f"{path.name} was edited or damaged: its checksum does not match its content"
        )
    try:
        manifest = _from_body(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadBackup(f"{path.name} lacks or mistypes a field ({exc!r})") from None
    _check_names(path.name, manifest)
    return manifest


def _check_names(manifest_name: str, manifest: Manifest) -> None:
    """Refuse a manifest that speaks for another backup or names a file not its own."""
    own = manifest_name.removesuffix(MANIFEST_SUFFIX)
    if manifest.id != own:
        raise UnsafeManifest(
            f"{manifest_name} says it is backup {_shown(manifest.id)}: a manifest speaks "
            "only for the backup it is named after, refused"
        )
    suffix = DUMP_SUFFIXES.get(manifest.database.format)
    if suffix is None:
        raise BadBackup(
            f"{manifest_name} has an unknown dump format {_shown(manifest.database.format)}"
        )
    expected = [("database", manifest.database, own + suffix)]
    if manifest.archive is not None:
        expected.append(("archive", manifest.archive, own + ARCHIVE_SUFFIX))
    for role, artefact, name in expected:
        if artefact.file == name:
            continue
        if artefact.file in {"", ".", ".."} or "/" in artefact.file or "\x00" in artefact.file:
            why = "not a plain file name inside the backup's folder"
        else:
            why = f"this backup's {role} file can only be {name}"
        raise UnsafeManifest(
            f"{manifest_name} names {_shown(artefact.file)} as its {role} file: {why}, refused"
        )


def _shown(name: str) -> str:
    """A name from a manifest as a message shows it: quoted, control characters escaped."""
    return repr(name if len(name) <= 100 else name[:100] + "…")


def _body(manifest: Manifest) -> dict[str, Any]:
    body = asdict(manifest)
    body["journal_days"] = list(manifest.journal_days)
    body["server_logs"] = list(manifest.server_logs)
    return {"format": FORMAT, "version": VERSION, **body}


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _artefact(data: Any) -> Artefact:
    if not isinstance(data, dict):
        raise TypeError("an artefact is an object")
    size = data["size"]
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"size {size!r}")
    expanded = data.get("expanded")
    if expanded is not None:
        expanded = _count(expanded, "expanded")
    return Artefact(str(data["file"]), str(data["format"]), size, str(data["sha256"]), expanded)


def _count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} {value!r}")
    return value


def _from_body(body: dict[str, Any]) -> Manifest:
    archive = body.get("archive")
    positions = body.get("positions") or {}
    if not isinstance(positions, dict):
        raise TypeError("positions is an object")
    manifest = Manifest(
        id=str(body["id"]),
        created_at=str(body["created_at"]),
        backend=str(body["backend"]),
        source=str(body["source"]),
        records=_count(body["records"], "records"),
        events=_count(body["events"], "events"),
        database=_artefact(body["database"]),
        archive=None if archive is None else _artefact(archive),
        journal_days=tuple(str(day) for day in body.get("journal_days", ())),
        server_logs=tuple(str(name) for name in body.get("server_logs", ())),
        positions={str(k): _count(v, "position") for k, v in positions.items()},
        duration_s=float(body.get("duration_s", 0.0)),
        tool=str(body.get("tool", "")),
        verified_at=body.get("verified_at"),
        verify_error=body.get("verify_error"),
    )
    parse_time(manifest.created_at)  # ValueError if it is not format_time's form
    return manifest
