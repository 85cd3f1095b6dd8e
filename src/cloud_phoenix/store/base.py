"""The LogStore protocol every backend implements, and the values that cross it."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from cloud_phoenix.journal import (
    POS_MAX_LENGTH,
    POS_PATTERN,
    TIME_LENGTH,
    TIME_PATTERN,
    TIME_RE,
    AccessRecord,
    JournalEntry,
)

# A cursor is "TIME~POS" (~ needs no escaping in a URL). The API document declares `before`
# with this pattern and length, and `Cursor.decode` accepts exactly what they allow: the
# pattern reads the same in ECMA-262 (JSON Schema), Rust (pydantic) and Python (fullmatch).
CURSOR_PATTERN = f"^({TIME_PATTERN})~({POS_PATTERN})$"
CURSOR_MAX_LENGTH = TIME_LENGTH + 1 + POS_MAX_LENGTH
_CURSOR = re.compile(CURSOR_PATTERN)

EVENT_KIND_MAX = 64
EVENT_MESSAGE_MAX = 2000
EVENTS_LIMIT_MAX = 1000
_INT64 = range(-(2**63), 2**63)
_SURROGATES = re.compile("[\ud800-\udfff]")


class StoreError(Exception):
    """A store operation failed; the message says what and, where it can, what to do."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (down, refused, timed out, bad credentials)."""


class PositionConflict(StoreError):
    """The journal position moved under us: another collector committed that batch first."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of logs ended: the (time, pos) of its last, oldest row."""

    time: str
    pos: str

    def encode(self) -> str:
        return f"{self.time}~{self.pos}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError unless `text` has the shape of a cursor (CURSOR_PATTERN)."""
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise ValueError("not a cursor returned by /logs")
        return cls(match[1], match[2])


@dataclass(frozen=True, slots=True)
class LogQuery:
    """A page of records, newest first. `since` is inclusive, `until` exclusive."""

    limit: int = 100
    before: Cursor | None = None
    status: int | None = None
    path: str | None = None
    since: str | None = None
    until: str | None = None


@dataclass(frozen=True, slots=True)
class LogRow:
    """A stored record and its journal position."""

    pos: str
    record: AccessRecord


@dataclass(frozen=True, slots=True)
class Event:
    """Something the platform did or saw: a restart, a scale event, a CPU peak, a backup."""

    time: str  # journal.format_time() UTC fixed-width string, like records
    kind: str  # e.g. "worker_restarted", "scaled_out", "child_restarted"
    message: str  # human text
    data: dict[str, Any] = field(default_factory=dict)  # JSON details (pids, counts, durations)


@runtime_checkable
class LogStore(Protocol):
    """The `logs` and `events` tables or collections, and the journal positions read."""

    backend: str

    def migrate(self) -> None:
        """Create tables, collections and indexes if they are missing (idempotent)."""

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query."""

    def positions(self, files: Collection[str] | None = None) -> dict[str, int]:
        """How far each journal file has been read into the store (file name -> byte offset):
        every file's, or only those of `files` (a file never read has none).

        The collector, /ready and /metrics ask for the files they have, not for the row that
        every instance leaves for every day it wrote.
        """

    def forget_positions(self, files: Collection[str]) -> int:
        """Delete the positions of `files` (journal files deleted long ago); how many went.

        Safe whatever is forgotten: a file read again from its start inserts nothing twice,
        since a record's journal position is its key.
        """

    def commit_batch(self, file: str, start: int, end: int, entries: Sequence[JournalEntry]) -> int:
        """In one transaction: move `file`'s position from `start` to `end`, insert `entries`,
        and add the number really inserted (a record already stored is skipped) to `count`.

        Raises PositionConflict (nothing written) if the stored position is not `start`.
        Returns the number of records inserted.
        """

    def query(self, query: LogQuery) -> list[LogRow]:
        """Records matching `query`, newest first (time, then pos, descending)."""

    def count(self) -> int:
        """How many records the store holds, at a cost that does not grow with them.

        The SQL stores read an exact one-row counter that `commit_batch` moves and `migrate`
        (or a restore) counts afresh; MongoDB its collection metadata (see MongoStore.count).
        Not the planner's estimate: only as fresh as the last ANALYZE, and none in SQLite
        until one runs.
        """

    def add_event(self, event: Event) -> None:
        """Store `event`, checked by `prepare_event`: a long message is cut, never refused."""

    def events(
        self, limit: int = 50, kind: str | None = None, since: str | None = None
    ) -> list[Event]:
        """Up to `limit` (1..1000) events, newest first, ties newest-inserted first.

        `kind` keeps one kind; `since` (inclusive) compares with `time` as text.
        """

    def close(self) -> None:
        """Release connections."""


def prepare_event(event: Event) -> tuple[Event, str]:
    """The event as every store keeps it, and its `data` as JSON text; StoreError if invalid.

    The message is cut to EVENT_MESSAGE_MAX characters ending in "…", and lone surrogates
    become U+FFFD: an event must not be lost for its text. `data` comes back in its JSON
    form (tuples as lists, non-string keys as strings), so every store returns the same.
    """
    if not TIME_RE.match(event.time):
        raise StoreError(
            f"event time {event.time!r} is not in journal.format_time() form "
            "(YYYY-MM-DDTHH:MM:SS.ffffffZ, UTC)"
        )
    if not event.kind or len(event.kind) > EVENT_KIND_MAX or _SURROGATES.search(event.kind):
        raise StoreError(
            f"an event kind is 1 to {EVENT_KIND_MAX} characters of text, "
            f"not {event.kind[: EVENT_KIND_MAX + 16]!r}"
        )
    if not isinstance(event.data, dict):
        raise StoreError(f"event data must be a dict, not {type(event.data).__name__}")
    try:
        # ensure_ascii: the text is then plain ASCII, which every database column holds.
        text = json.dumps(event.data, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(
            f"event {event.kind!r}: data must be JSON-serialisable "
            f"(dicts, lists, strings, numbers, booleans, None): {exc}"
        ) from None
    data: dict[str, Any] = json.loads(text)
    problem = _portable_problem(data)
    if problem:
        raise StoreError(f"event {event.kind!r}: data cannot be stored: {problem}")
    message = _SURROGATES.sub("\ufffd", event.message)
    if len(message) > EVENT_MESSAGE_MAX:
        message = message[: EVENT_MESSAGE_MAX - 1] + "…"
    return replace(event, message=message, data=data), text


def check_events_limit(limit: int) -> None:
    """Raise ValueError unless 1 <= limit <= EVENTS_LIMIT_MAX."""
    if not 1 <= limit <= EVENTS_LIMIT_MAX:
        raise ValueError(f"events limit must be 1..{EVENTS_LIMIT_MAX}, not {limit}")


def event_data(text: str) -> dict[str, Any]:
    """A stored `data` column back to its dict; StoreError if it is not a JSON object."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise StoreError(f"stored event data is not a JSON object: {text[:80]!r}")
    return data


def _portable_problem(value: Any) -> str | None:
    """Why a JSON value could not be kept the same in every store (None: it can).

    MongoDB holds integers in 64 bits, key names without NUL, and only valid UTF-8; a
    surrogate escaped in JSON text would come back from the SQL stores but not from BSON.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if "\x00" in key or _SURROGATES.search(key):
                    return f"key {key!r} holds a NUL or an unpaired surrogate"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _SURROGATES.search(item):
            return f"string {item[:40]!r} holds an unpaired surrogate"
        elif isinstance(item, int) and not isinstance(item, bool) and item not in _INT64:
            return f"integer {item} does not fit in 64 bits"
    return None
