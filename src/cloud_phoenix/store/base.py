"""The LogStore protocol every backend implements, and the values that cross it."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cloud_phoenix.journal import AccessRecord, JournalEntry

RECORD_FIELDS = (
    "time",
    "method",
    "path",
    "query",
    "status",
    "bytes",
    "duration_ms",
    "remote_addr",
    "user_agent",
    "referrer",
    "worker",
    "request_id",
)


POS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}:\d{12}$")
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


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
        raw = f"{self.time}|{self.pos}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Raises ValueError when `text` is not a cursor this application handed out."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("not a cursor returned by /logs") from None
        time, sep, pos = raw.partition("|")
        if not sep or not TIME_RE.match(time) or not POS_RE.match(pos):
            raise ValueError("not a cursor returned by /logs")
        return cls(time, pos)


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


@runtime_checkable
class LogStore(Protocol):
    """The `logs` table or collection, and the journal positions read into it."""

    backend: str

    def migrate(self) -> None:
        """Create tables, collections and indexes if they are missing (idempotent)."""

    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query."""

    def positions(self) -> dict[str, int]:
        """How far each journal file has been read into the store (file name -> byte offset)."""

    def commit_batch(self, file: str, start: int, end: int, entries: Sequence[JournalEntry]) -> int:
        """In one transaction: move `file`'s position from `start` to `end` and insert `entries`.

        Raises PositionConflict (nothing written) if the stored position is not `start`.
        Returns the number of records inserted.
        """

    def query(self, query: LogQuery) -> list[LogRow]:
        """Records matching `query`, newest first (time, then pos, descending)."""

    def count(self) -> int:
        """How many records the store holds."""

    def close(self) -> None:
        """Release connections."""


def redact_url(url: str) -> str:
    """The URL without user, password, path or query: safe to show (scheme://host:port,...)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "(not a URL)"
    if scheme.startswith("sqlite"):
        return "sqlite"
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    hosts = netloc.rpartition("@")[2]  # userinfo may itself contain '@' only before the last one
    return f"{scheme}://{hosts}"
