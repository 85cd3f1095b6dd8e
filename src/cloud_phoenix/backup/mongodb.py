"""MongoDB snapshots: `mongodump --archive --gzip` where installed, else a streamed export.

The streamed export (`.mongo.jsonl.gz`) is a header line, then one line per document,
`{"c": collection, "d": document}` in canonical Extended JSON, so ObjectIds and 64-bit
integers come back as they went in. `journal_positions` is read first, then `logs`, then
`events`: the positions can then only be behind the records, never ahead, and after a
restore the collector re-reads (idempotently, `_id` is the journal position) rather than
skips. The counts in the manifest are the lines written, so a restore checks them exactly.

A restore reads the export as a stream, one line at a time: never past the size its
manifest declares (`expanded`), never a line longer than a document can make.

Neither is a point-in-time snapshot on a standalone server (it has no snapshot reads);
that ordering is what keeps a restore consistent. A restore is not one transaction
either: restore into a new database (`--into`) and switch DB_CONNECTION_STRING to it.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from bson import json_util
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from cloud_phoenix.backup.errors import (
    NOTHING_CHANGED,
    BackupError,
    BadBackup,
    SourceUnavailable,
)
from cloud_phoenix.backup.files import FILE_MODE, BoundedGzip, fsync_file, temp_path
from cloud_phoenix.backup.manifest import Manifest
from cloud_phoenix.backup.snapshot import Progress, Restored, Snapshot, lines
from cloud_phoenix.store.mongodb import CLIENT_DEFAULTS, DEFAULT_DATABASE, MongoStore
from cloud_phoenix.store.urls import redact_url

JSONL = "mongo-jsonl-gzip"
ARCHIVE = "mongodump-archive-gzip"
HEADER = {"format": "cloud-phoenix-mongo", "version": 1}
ORDER = ("journal_positions", "logs", "events")
BATCH = 1000
# The longest line a document can make: twice MongoDB's 16 MiB document limit, room for
# Extended JSON's escapes. A longer one is refused before it is read whole into memory.
MAX_LINE = 32 << 20
_OPTIONS = json_util.CANONICAL_JSON_OPTIONS

Document = dict[str, Any]


def dump_format(url: str) -> str:
    return ARCHIVE if shutil.which("mongodump") and shutil.which("mongorestore") else JSONL


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or DEFAULT_DATABASE


def dump(url: str, final: Path, progress: Progress) -> Snapshot:
    client = _client(url)
    try:
        database = client.get_default_database(DEFAULT_DATABASE)
        with _errors(url):
            positions = {
                str(doc["_id"]): int(doc["offset"])
                for doc in database["journal_positions"].find({}, {"offset": 1})
            }
            if dump_format(url) == ARCHIVE:
                records, events = _mongodump(url, temp_path(final), progress)
                return Snapshot(ARCHIVE, records, events, positions, _version("mongodump"))
            counts, expanded = _export(database, temp_path(final), progress)
    finally:
        client.close()
    return Snapshot(JSONL, counts["logs"], counts["events"], positions, "pymongo export", expanded)


def restore(dump: Path, url: str, manifest: Manifest, progress: Progress) -> Restored:
    if manifest.database.format == JSONL:
        counts = {name: 0 for name in ORDER}
        for collection, _ in _read(dump, manifest.database.expanded):
            counts[collection] += 1
        if (counts["logs"], counts["events"]) != (manifest.records, manifest.events):
            raise BadBackup(
                f"{dump.name} holds {counts['logs']} records and {counts['events']} events, "
                f"the manifest says {manifest.records} and {manifest.events}: mismatched"
            )
        _load(dump, manifest.database.expanded, url, sum(counts.values()), progress)
    else:
        _mongorestore(dump, url, manifest)
    store = MongoStore(url)
    try:
        store.migrate()  # the indexes
    finally:
        store.close()
    client = _client(url)
    try:
        database = client.get_default_database(DEFAULT_DATABASE)
        with _errors(url):
            return Restored(
                database["logs"].count_documents({}), database["events"].count_documents({})
            )
    finally:
        client.close()


@contextmanager
def scratch(url: str, folder: Path) -> Iterator[str]:
    name = f"phoenix_verify_{secrets.token_hex(4)}"
    scratch_url = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    try:
        yield scratch_url
    finally:
        client = _client(url)
        try:
            client.drop_database(name)
        finally:
            client.close()


def _client(url: str) -> MongoClient[Document]:
    # The store's short timeouts, unless the URL sets its own (pymongo refuses both).
    given = {key.lower() for key, _ in parse_qsl(url.partition("?")[2])}
    options = {k: v for k, v in CLIENT_DEFAULTS.items() if k.lower() not in given}
    return MongoClient(url, **options)


@contextmanager
def _errors(url: str) -> Iterator[None]:
    try:
        yield
    except PyMongoError as exc:
        raise SourceUnavailable(
            f"MongoDB at {redact_url(url)} is unavailable: {type(exc).__name__}"
        ) from None


def _export(database: Any, target: Path, progress: Progress) -> tuple[dict[str, int], int]:
    """Write the export; returns the documents of each collection and the bytes written
    before compression (the manifest's `expanded`)."""
    totals = {name: database[name].estimated_document_count() for name in ORDER}
    total = sum(totals.values())
    counts = {name: 0 for name in ORDER}
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        expanded = gz.write(json.dumps(HEADER).encode() + b"\n")
        for name in ORDER:
            for document in database[name].find({}, sort=[("_id", 1)]):
                line = json_util.dumps({"c": name, "d": document}, json_options=_OPTIONS)
                expanded += gz.write(line.encode() + b"\n")
                counts[name] += 1
                if counts[name] % BATCH == 0:
                    progress("snapshot", sum(counts.values()), max(total, 1))
    fsync_file(target)
    return counts, expanded


def _read(dump: Path, declared: int | None) -> Iterator[tuple[str, Document]]:
    """The export's documents, streamed: BadBackup past `declared` bytes (when the manifest
    declares them), at a line longer than MAX_LINE, or at anything not a document."""
    over = BadBackup(
        f"{dump.name} expands beyond the {declared} bytes its manifest declares "
        f"(damaged, or a decompression bomb), refused: {NOTHING_CHANGED}"
    )
    try:
        with BoundedGzip(dump, sys.maxsize if declared is None else declared, over) as gz:
            if json.loads(_line(gz, dump)) != HEADER:
                raise BadBackup(f"{dump.name} is not a cloud-phoenix MongoDB export")
            while raw := _line(gz, dump):
                item = json_util.loads(raw, json_options=_OPTIONS)
                if item.get("c") not in ORDER or not isinstance(item.get("d"), dict):
                    raise BadBackup(f"{dump.name} holds a line that is not a document")
                yield item["c"], item["d"]
    except (OSError, EOFError, zlib.error, ValueError) as exc:
        raise BadBackup(f"{dump.name} cannot be read ({exc}): it is damaged") from None
    if declared is not None and gz.done != declared:
        raise BadBackup(
            f"{dump.name} expands to {gz.done} bytes, its manifest declares {declared}: mismatched"
        )


def _line(gz: BoundedGzip, dump: Path) -> bytes:
    line = gz.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadBackup(
            f"{dump.name} holds a line longer than {MAX_LINE} bytes, which no document makes "
            f"(damaged, or a decompression bomb), refused: {NOTHING_CHANGED}"
        )
    return line


def _load(dump: Path, declared: int | None, url: str, total: int, progress: Progress) -> None:
    client = _client(url)
    try:
        database = client.get_default_database(DEFAULT_DATABASE)
        with _errors(url):
            for name in ORDER:
                database[name].drop()
            batch: list[Document] = []
            current = ""
            for done, (collection, document) in enumerate(_read(dump, declared), 1):
                if collection != current and batch:
                    database[current].insert_many(batch)
                    batch = []
                current = collection
                batch.append(document)
                if len(batch) >= BATCH:
                    database[current].insert_many(batch)
                    batch = []
                    progress("restore", done, total)
            if batch:
                database[current].insert_many(batch)
    finally:
        client.close()


@contextmanager
def _config(url: str) -> Iterator[Path]:
    """A 0600 YAML file giving the tools the URL: a password on a command line shows in `ps`."""
    with tempfile.TemporaryDirectory(prefix="phoenix-mongo-") as folder:
        path = Path(folder) / "config.yaml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"uri: {json.dumps(url)}\n")
        yield path


def _mongodump(url: str, target: Path, progress: Progress) -> tuple[int, int]:
    counts = {"logs": 0, "events": 0}
    database = database_name(url)
    with _config(url) as config:
        command = ["mongodump", f"--config={config}", f"--archive={target}", "--gzip"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        tail: list[str] = []
        for line in lines(process.stderr):
            tail = [*tail[-9:], line]
            for name in counts:
                marker = f"done dumping {database}.{name} ("
                if marker in line:
                    counts[name] = int(line.split(marker, 1)[1].split()[0])
                    progress("snapshot", sum(1 for n in counts.values() if n), len(counts))
        if process.wait() != 0:
            raise BackupError(f"mongodump failed: {'; '.join(tail[-3:])}")
    os.chmod(target, FILE_MODE)
    fsync_file(target)
    return counts["logs"], counts["events"]


def _mongorestore(dump: Path, url: str, manifest: Manifest) -> None:
    source = manifest.source.rsplit("/", 1)[-1] or DEFAULT_DATABASE
    with _config(url) as config:
        command = ["mongorestore", f"--config={config}", f"--archive={dump}", "--gzip", "--drop"]
        command += [f"--nsFrom={source}.*", f"--nsTo={database_name(url)}.*"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"mongorestore failed: {result.stderr.strip()[-500:]}")


def _version(tool: str) -> str:
    result = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    return (result.stdout.splitlines() or [tool])[0]
