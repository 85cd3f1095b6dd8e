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
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from cloud_phoenix.config import INSTANCE_MAX as INSTANCE_MAX
from cloud_phoenix.config import INSTANCE_PATTERN as INSTANCE_PATTERN

log = logging.getLogger(__name__)

# The journal's names, times and positions, as patterns every reader shares: the files
# here, the stores' checks and the API document's cursor (store.base). [0-9], not \d:
# Python's \d takes any Unicode digit. Unanchored, so that they compose; the regexes below
# end in \Z, not $, which would let a trailing newline through.
DAY_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
# INSTANCE_PATTERN, INSTANCE_MAX: an instance's name, declared with PHOENIX_INSTANCE (config).
# A record's time, as `format_time` writes it (TIME_FORMAT is its strptime spelling).
TIME_PATTERN = rf"{DAY_PATTERN}T[0-9]{{2}}:[0-9]{{2}}:[0-9]{{2}}\.[0-9]{{6}}Z"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIME_LENGTH = len("YYYY-MM-DDTHH:MM:SS.ffffffZ")
# A record's position, as `position_key` writes it: day, instance if any, byte offset.
POS_PATTERN = rf"{DAY_PATTERN}(?::{INSTANCE_PATTERN})?:[0-9]{{12}}"
POS_MAX_LENGTH = len("YYYY-MM-DD:") + INSTANCE_MAX + len(":000000000000")
# access-DAY.jsonl, or access-DAY.INSTANCE.jsonl where several instances (pods, tasks) each
# keep a journal of their own and share one store: the instance keeps their positions apart.
INSTANCE_RE = re.compile(rf"^{INSTANCE_PATTERN}\Z")
FILE_RE = re.compile(rf"^access-({DAY_PATTERN})(?:\.({INSTANCE_PATTERN}))?\.jsonl\Z")
TIME_RE = re.compile(rf"^{TIME_PATTERN}\Z")
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
DAY = 86400
# A client sets the path, query, user agent, referrer (and, through a trusted proxy's
# X-Forwarded-For, the remote address): each is journaled, stored and printed at most this
# long, so that one request cannot put 14 KB into every copy of its record.
MAX_VALUE_CHARS = 2048


def format_time(moment: datetime) -> str:
    """UTC, microseconds, fixed width: such strings sort as the times they name."""
    # isoformat pads the year to four digits (strftime("%Y") does not, before 1000) and is
    # several times faster than strftime: this runs for every request.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


class TimeFormatter:
    """`format_time` of epoch seconds, with the date and time formatted once a second.

    One runs per serving process and formats the time of every request: the microseconds
    are the only part that changes between most calls.
    """

    def __init__(self) -> None:
        self._cached = (-1, "")  # (second, "YYYY-MM-DDTHH:MM:SS."): one tuple, swapped whole

    def __call__(self, epoch: float) -> str:
        second = int(epoch)
        cached_second, prefix = self._cached
        if second != cached_second:
            prefix = format_time(datetime.fromtimestamp(second, UTC))[:-7]
            self._cached = (second, prefix)
        return f"{prefix}{int((epoch - second) * 1_000_000):06d}Z"


def parse_time(text: str) -> datetime:
    """Read a time written by `format_time`."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def file_name(moment: datetime, instance: str = "") -> str:
    day = f"{moment.astimezone(UTC):%Y-%m-%d}"
    return f"access-{day}.{instance}.jsonl" if instance else f"access-{day}.jsonl"


def cap_value(value: str) -> str:
    """`value`, or its first MAX_VALUE_CHARS characters followed by
    "...[truncated N chars]", N the characters cut: the cut is visible where it is read."""
    if len(value) <= MAX_VALUE_CHARS:
        return value
    return f"{value[:MAX_VALUE_CHARS]}...[truncated {len(value) - MAX_VALUE_CHARS} chars]"


def position_key(file: str, offset: int) -> str:
    """The record's identity: the journal day, the instance if any, the byte offset."""
    return f"{position_prefix(file)}{offset:012d}"


def position_prefix(file: str) -> str:
    """What every position key in `file` starts with (the offset follows)."""
    match = FILE_RE.match(file)
    if match is None:
        return f"{file}:"
    day, instance = match.groups()
    return f"{day}:{instance}:" if instance else f"{day}:"


class AccessRecord(NamedTuple):
    """What is known of one request once it has been answered (or has killed its worker).

    The one definition of the record's fields, their order and their types: the journal
    line, the stores' columns and documents, and the /logs schema all derive from it.
    A named tuple, not a frozen dataclass: one is made for every request and for every
    line the collector reads, and a tuple is built several times faster.
    """

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
        """The record's journal line (`journal_line`)."""
        return journal_line(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> AccessRecord:
        """The record from a mapping of its fields (a journal line's object, a stored
        document), each converted to its type; ValueError if one is missing or mistyped."""
        try:
            return cls._make([convert(data[name]) for name, convert in _CONVERTERS])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"missing or mistyped field: {exc}") from None

    @classmethod
    def from_line(cls, line: builtins.bytes) -> AccessRecord:
        """Parse one journal line; raises ValueError on anything that is not a record."""
        return _parse_line(line, b"\\u" in line)


RECORD_FIELDS: tuple[str, ...] = AccessRecord._fields
# Each field's type (str, int or float) as read from the class: it converts a parsed value.
RECORD_TYPES: dict[str, type] = typing.get_type_hints(AccessRecord)
_CONVERTERS: tuple[tuple[str, Callable[[Any], object]], ...] = tuple(
    (name, RECORD_TYPES[name]) for name in RECORD_FIELDS
)
_FIELD_TYPES: tuple[type, ...] = tuple(RECORD_TYPES[name] for name in RECORD_FIELDS)
_new_tuple = tuple.__new__


def _parse_line(line: bytes, escaped: bool) -> AccessRecord:
    """The record of one journal line (ValueError if it is none); `escaped`: the line may
    hold a \\u escape, so its strings are checked for lone surrogates.

    The collector parses every line with this, and it is most of its CPU time: a line as
    the writer makes it (the fields in order, each of its type) is taken as it is, without
    the conversions of `from_mapping` (1.7 against 2.6 µs a line).
    """
    data = orjson.loads(line)  # refuses invalid UTF-8 and bad JSON: ValueError
    if type(data) is not dict:
        raise ValueError("a journal line must be a JSON object")
    values = tuple(data.values())
    if tuple(map(type, values)) == _FIELD_TYPES and tuple(data) == RECORD_FIELDS:
        record: AccessRecord = _new_tuple(AccessRecord, values)
    else:
        record = AccessRecord.from_mapping(data)
    if escaped:
        # JSON can spell a lone surrogate ("\\udc80") that no database can store as text;
        # the writer spells every other character as itself, so only escapes need a look.
        for value in record:
            if type(value) is str:
                value.encode("utf-8")
    return record


def journal_line(values: Sequence[object]) -> bytes:
    """The journal line of a record's values, in its fields' order: a JSON object and a
    newline. The request log passes a plain tuple: no record object is made per request."""
    # A dict display, not dict(zip(RECORD_FIELDS, values)): this runs once per request and
    # the display costs half as much (0.5 against 0.9 µs). The keys are AccessRecord's
    # fields in order; test_journal holds them to RECORD_FIELDS.
    (time_, method, path, query, status, size, duration_ms, remote_addr, user_agent,
     referrer, worker, request_id) = values  # fmt: skip
    fields = {
        "time": time_, "method": method, "path": path, "query": query, "status": status,
        "bytes": size, "duration_ms": duration_ms, "remote_addr": remote_addr,
        "user_agent": user_agent, "referrer": referrer, "worker": worker,
        "request_id": request_id,
    }  # fmt: skip
    try:
        return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:  # a lone surrogate: escaped by the slower encoder
        return _ENCODE(fields).encode() + b"\n"


class JournalEntry(NamedTuple):
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
        self._day = (0.0, 0.0)  # [start, end) in epoch seconds of the open file's day
        self.last_error: str | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def append(self, record: AccessRecord) -> None:
        """Write the record; raises OSError (disk full, folder gone) after noting it."""
        self.write_line(record.to_line())

    def write_line(self, line: bytes) -> None:
        """Write one journal line (`AccessRecord.to_line`) with a single `write`; raises OSError."""
        with self._lock:
            now = self._clock()
            try:
                start, end = self._day
                if not start <= now < end:
                    self._open_day(now)
                written = os.write(self._fd, line)
                if written != len(line):
                    # Short write on a full disk: end the fragment so the next line stays whole.
                    os.write(self._fd, b"\n")
                    raise OSError(f"short write: {written} of {len(line)} bytes")
            except OSError as exc:
                self.last_error = f"{self._name}: {exc.strerror or exc}"
                raise
            if self.last_error is not None:
                self.last_error = None

    def _open_day(self, now: float) -> None:
        """Open the file of `now`'s UTC day (the previous day's is closed)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._day = (0.0, 0.0)
        self._name = file_name(datetime.fromtimestamp(now, UTC), self.instance)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(
            self.directory / self._name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640
        )
        start = now // DAY * DAY
        self._day = (start, start + DAY)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                self._name = ""
                self._day = (0.0, 0.0)


def journal_files(directory: Path) -> list[str]:
    """The journal files in `directory`, oldest first: regular files only. A link is a name
    the collector moved to a new identity (journal.reuse), and its file is listed by its own
    name: read under both, its lines would be stored twice."""
    try:
        with os.scandir(directory) as entries:
            names = [
                entry.name
                for entry in entries
                if FILE_RE.match(entry.name) and entry.is_file(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return []
    return sorted(names)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Complete lines read from one file: the entries, lines skipped, where reading ended."""

    entries: list[JournalEntry]
    malformed: list[int]
    end: int


READ_AHEAD = 256 << 10  # read this much at a time, not max_bytes: ~1000 records, not 4 MiB


def read_chunk(path: Path, offset: int, max_records: int, max_bytes: int = 4 << 20) -> Chunk:
    """Read whole lines from `offset`; a line not yet ended by a newline is left for later."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        data = handle.read(min(max_bytes, READ_AHEAD))
        # The newlines are counted as they are read: counting all of `data` on each turn
        # costs the square of its size (a tenth of the collector's time at 16 k lines).
        newlines = data.count(b"\n")
        while len(data) < max_bytes and newlines < max_records:
            more = handle.read(min(max_bytes - len(data), READ_AHEAD))
            if not more:
                break
            newlines += more.count(b"\n")
            data += more
    lines = data.split(b"\n")
    lines.pop()  # what follows the last newline: a line still being written, or nothing
    entries: list[JournalEntry] = []
    malformed: list[int] = []
    position = offset
    file = path.name
    prefix = position_prefix(file)
    escaped = b"\\u" in data  # one look for the whole chunk: lines with escapes are rare
    # At most max_records lines: a blank or malformed one among them makes the chunk short.
    for line in lines[:max_records]:
        line_offset = position
        position += len(line) + 1
        try:
            record = _parse_line(line, escaped)
        except ValueError:
            if line.strip():  # a blank line is no record, and no error either
                malformed.append(line_offset)
            continue
        # tuple.__new__: the named tuple's own __new__ is a Python function, and this
        # runs for every line the collector reads.
        entries.append(
            _new_tuple(JournalEntry, (f"{prefix}{line_offset:012d}", file, line_offset, record))
        )
    if not lines and len(data) == max_bytes:
        # One line longer than a whole read: no record is that long, skip it as malformed.
        malformed.append(offset)
        position = offset + len(data)
    return Chunk(entries, malformed, position)


def first_record_time(path: Path, offset: int) -> str | None:
    """The time of the first whole record at or after `offset`, if any."""
    chunk = read_chunk(path, offset, max_records=1, max_bytes=64 << 10)
    return chunk.entries[0].record.time if chunk.entries else None
