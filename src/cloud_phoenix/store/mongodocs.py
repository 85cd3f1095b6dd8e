"""What the MongoDB store writes and reads, as pure functions: a record's document (keyed by
its journal position) and back, an event back from its document, the `find` filter of a
page, and the useful part of pymongo's error messages.

Apart from mongodb.py so that they are tested where no MongoDB server runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo.errors import BulkWriteError

from cloud_phoenix.journal import RECORD_FIELDS, AccessRecord, JournalEntry
from cloud_phoenix.store.base import (
    Event,
    LogQuery,
    LogRow,
    StoreError,
)

Document = dict[str, Any]
DUPLICATE_KEY = 11000  # MongoDB's error code for a second document with the same _id
# The driver's topology types (pymongo's TopologyDescription.topology_type_name) whose
# servers run multi-document transactions: a replica set's primary, a sharded cluster's
# mongos.
_TRANSACTIONAL_TOPOLOGIES = frozenset({"ReplicaSetWithPrimary", "Sharded"})


def has_transactions(hello: Mapping[str, Any] | None, topology_type: str) -> bool:
    """Whether batches can commit in a transaction: the server's `hello` says so (a replica
    set names itself, a mongos says "isdbgrid"); where a server has no `hello` (None: some
    DocumentDB versions refuse the command), the driver's own view of the topology decides.
    In doubt, no: the compare-and-set path is exactly-once on any server."""
    if hello is not None:
        return "setName" in hello or hello.get("msg") == "isdbgrid"
    return topology_type in _TRANSACTIONAL_TOPOLOGIES


def mongo_filter(query: LogQuery) -> Document:
    """The `find` filter for `query`: the same conditions as the SQL stores' WHERE clause."""
    found: Document = {}
    if query.status is not None:
        found["status"] = query.status
    if query.path is not None:
        found["path"] = query.path
    span: Document = {}
    if query.since is not None:
        span["$gte"] = query.since
    if query.until is not None:
        span["$lt"] = query.until
    if span:
        found["time"] = span
    if query.before is not None:
        found["$or"] = [
            {"time": {"$lt": query.before.time}},
            {"time": query.before.time, "_id": {"$lt": query.before.pos}},
        ]
    return found


def record_document(entry: JournalEntry) -> Document:
    # `time` stays the journal's fixed-width ISO string: it sorts as the time it names,
    # compares with `since`/`until`/cursors as in the SQL stores, and keeps the
    # microseconds that a BSON date (milliseconds) would lose.
    return {"_id": entry.pos, **{name: getattr(entry.record, name) for name in RECORD_FIELDS}}


def log_row(doc: Mapping[str, Any]) -> LogRow:
    try:
        record = AccessRecord.from_mapping(doc)
    except ValueError as exc:
        raise StoreError(
            f"logs document {doc.get('_id')!r} is not an access record: {exc}"
        ) from None
    return LogRow(str(doc["_id"]), record)


def event_from(doc: Mapping[str, Any]) -> Event:
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(doc.get("time"), str):
        raise StoreError(f"events document {doc!r:.200} is not an event")
    return Event(doc["time"], str(doc.get("kind", "")), str(doc.get("message", "")), plain(data))


def plain(value: Any) -> Any:
    """`value` with BSON's Int64 as int: the data comes back as the types it went in as."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def error_detail(exc: Exception) -> str:
    """The useful part of a pymongo message (not the topology dump or the raw reply)."""
    if isinstance(exc, BulkWriteError):
        errors = [*exc.details.get("writeErrors", []), *exc.details.get("writeConcernErrors", [])]
        # A duplicate is never why a batch failed (they are ignored): name the other error.
        errors.sort(key=lambda error: error.get("code") == DUPLICATE_KEY)
        if errors:
            return str(errors[0].get("errmsg", exc))
    text = str(exc)
    for noise in (", Topology Description:", ", full error:"):
        text = text.partition(noise)[0]
    return text
