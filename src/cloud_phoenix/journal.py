"""The access record and the journal files it is appended to.

One JSON line per request, written with a single ``write`` on a file opened with
``O_APPEND``: once the call returns the line is in the kernel, so a worker killed an
instant later loses nothing, and lines from several processes never interleave.
Files are named ``access-YYYY-MM-DD.jsonl`` after the UTC day they were written on.
A record's position in the journal (day and byte offset) is its identity in every store.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

# access-DAY.jsonl, or access-DAY.INSTANCE.jsonl where several instances (pods, tasks) each
# keep a journal of their own and share one store: the instance keeps their positions apart.
INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
FILE_RE = re.compile(r"^access-(\d{4}-\d{2}-\d{2})(?:\.([A-Za-z0-9][A-Za-z0-9_-]{0,62}))?\.jsonl$")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
DAY = 86400


def format_time(moment: datetime) -> str:
    """UTC, microseconds, fixed width: such strings sort as the times they name."""
    # isoformat pads the year to four digits (strftime("%Y") does not, before 1000) and is
    # several times faster than strftime: this runs for every request.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Read a time written by `format_time`."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def file_name(moment: datetime, instance: str = "") -> str:
    day = f"{moment.astimezone(UTC):%Y-%m-%d}"
    return f"access-{day}.{instance}.jsonl" if instance else f"access-{day}.jsonl"


def position_key(file: str, offset: int) -> str:
    """The record's identity: the journal day, the instance if any, the byte offset."""
    match = FILE_RE.match(file)
    if match is None:
        return f"{file}:{offset:012d}"
    day, instance = match.groups()
    return f"{day}:{instance}:{offset:012d}" if instance else f"{day}:{offset:012d}"


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """What is known of one request once it has been answered (or has killed its worker)."""

    time: str
    method: str
    path: str
    query: str
    status: int
    bytes: int
    duration_ms: float
    remote_addr: str
    user_agent: str
    referrer: str
    worker: str
    request_id: str

    def to_line(self) -> builtins.bytes:
        # A dict literal, not dataclasses.asdict (which deep-copies): this runs per request.
        fields = {
            "time": self.time,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": self.duration_ms,
            "remote_addr": self.remote_addr,
            "user_agent": self.user_agent,
            "referrer": self.referrer,
            "worker": self.worker,
            "request_id": self.request_id,
        }
        try:
            return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # a lone surrogate: escaped by the slower encoder
            return _ENCODE(fields).encode() + b"\n"

    @classmethod
    def from_line(cls, line: builtins.bytes) -> AccessRecord:
        """Parse one journal line; raises ValueError on anything that is not a record."""
        data = orjson.loads(line)  # refuses lone surrogates and invalid UTF-8: ValueError
        if not isinstance(data, dict):
            raise ValueError("a journal line must be a JSON object")
        try:
            record = cls(
                time=str(data["time"]),
                method=str(data["method"]),
                path=str(data["path"]),
                query=str(data["query"]),
                status=int(data["status"]),
                bytes=int(data["bytes"]),
                duration_ms=float(data["duration_ms"]),
                remote_addr=str(data["remote_addr"]),
                user_agent=str(data["user_agent"]),
                referrer=str(data["referrer"]),
                worker=str(data["worker"]),
                request_id=str(data["request_id"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"journal line is missing or mistypes a field: {exc}") from None
        for value in (
            record.method,
            record.path,
            record.query,
            record.remote_addr,
            record.user_agent,
            record.referrer,
            record.worker,
            record.request_id,
        ):
            # JSON can spell a lone surrogate ("\udc80") that no database can store as text.
            value.encode("utf-8")
        return record


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A record with where it stands in the journal."""

    pos: str
    file: str
    offset: int
    record: AccessRecord


class JournalWriter:
    """Appends records to today's journal file, one ``write`` a record."""

    def __init__(
        self, directory: Path, clock: Callable[[], float] = time.time, instance: str = ""
    ) -> None:
        """`clock` gives the epoch time of a write: its UTC day names the file."""
        if instance and not INSTANCE_RE.match(instance):
            raise ValueError(f"instance {instance!r}: letters, digits, '-' and '_' only")
        self.instance = instance
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._fd = -1
        self._name = ""
        self._day = -1
        self.last_error: str | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def append(self, record: AccessRecord) -> None:
        """Write the record; raises OSError (disk full, folder gone) after noting it."""
        line = record.to_line()
        with self._lock:
            now = self._clock()
            name = self._name
            try:
                if int(now // DAY) != self._day:
                    name = file_name(datetime.fromtimestamp(now, UTC), self.instance)
                    self._reopen(name)
                    self._day = int(now // DAY)
                written = os.write(self._fd, line)
                if written != len(line):
                    # Short write on a full disk: end the fragment so the next line stays whole.
                    os.write(self._fd, b"\n")
                    raise OSError(f"short write to {name}: {written} of {len(line)} bytes")
            except OSError as exc:
                self.last_error = f"{name}: {exc.strerror or exc}"
                raise
            self.last_error = None

    def _reopen(self, name: str) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.directory / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._name = name

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._name = ""
                self._day = -1


def journal_files(directory: Path) -> list[str]:
    """The journal files in `directory`, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if FILE_RE.match(name))


@dataclass(frozen=True, slots=True)
class Chunk:
    """Complete lines read from one file: the entries, lines skipped, where reading ended."""

    entries: list[JournalEntry]
    malformed: list[int]
    end: int


def read_chunk(path: Path, offset: int, max_records: int, max_bytes: int = 4 << 20) -> Chunk:
    """Read whole lines from `offset`; a line not yet ended by a newline is left for later."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(max_bytes)
    entries: list[JournalEntry] = []
    malformed: list[int] = []
    position = offset
    start = 0
    for line in _lines(data):
        if len(entries) >= max_records:
            break
        line_offset = position
        position += len(line)
        start += len(line)
        body = line.rstrip(b"\n")
        if not body.strip():
            continue
        try:
            record = AccessRecord.from_line(body)
        except ValueError:
            malformed.append(line_offset)
            continue
        entries.append(
            JournalEntry(position_key(path.name, line_offset), path.name, line_offset, record)
        )
    if start == 0 and len(data) == max_bytes and b"\n" not in data:
        # One line longer than a whole read: no record is that long, skip it as malformed.
        malformed.append(offset)
        position = offset + len(data)
    return Chunk(entries, malformed, position)


def _lines(data: bytes) -> Iterator[bytes]:
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return
        yield data[start : end + 1]
        start = end + 1


def first_record_time(path: Path, offset: int) -> str | None:
    """The time of the first whole record at or after `offset`, if any."""
    chunk = read_chunk(path, offset, max_records=1, max_bytes=64 << 10)
    return chunk.entries[0].record.time if chunk.entries else None
