"""The MongoDB store's pure parts (store/mongodocs.py): they run here, where no MongoDB
server does; the store itself runs the contract suite where PHOENIX_TEST_MONGODB_URL is set."""

from __future__ import annotations

import pytest
from bson.int64 import Int64
from pymongo.errors import BulkWriteError, ServerSelectionTimeoutError
from pymongo.topology_description import TOPOLOGY_TYPE

from cloud_phoenix.journal import AccessRecord, JournalEntry
from cloud_phoenix.store.base import Cursor, LogQuery, StoreError
from cloud_phoenix.store.mongodocs import (
    error_detail,
    event_from,
    has_transactions,
    log_row,
    mongo_filter,
    record_document,
)

RECORD = AccessRecord(
    time="2026-11-28T08:00:00.123456Z",
    method="GET",
    path="/generatecert",
    query="cn=a.example",
    status=200,
    bytes=3120,
    duration_ms=1.5,
    remote_addr="127.0.0.1",
    user_agent="curl/8",
    referrer="",
    worker="host:42",
    request_id="abc",
)


def test_a_record_goes_in_keyed_by_its_journal_position_and_comes_back_whole() -> None:
    entry = JournalEntry("2026-11-28:000000000100", "access-2026-11-28.jsonl", 100, RECORD)
    document = record_document(entry)
    assert document["_id"] == entry.pos
    assert document["time"] == RECORD.time  # the journal's string: microseconds kept
    row = log_row(document)
    assert row.pos == entry.pos and row.record == RECORD


def test_a_document_that_is_not_a_record_is_a_store_error_naming_it() -> None:
    with pytest.raises(StoreError, match="'x1' is not an access record"):
        log_row({"_id": "x1", "time": "t"})
    with pytest.raises(StoreError, match="not an access record"):
        log_row({**record_document(JournalEntry("p", "f", 0, RECORD)), "status": "two"})


def test_the_filter_has_the_sql_stores_conditions() -> None:
    assert mongo_filter(LogQuery()) == {}
    query = LogQuery(
        status=404,
        path="/x",
        since="2026-11-28T00:00:00.000000Z",
        until="2026-11-29T00:00:00.000000Z",
        before=Cursor("2026-11-28T08:00:00.000000Z", "p9"),
    )
    assert mongo_filter(query) == {
        "status": 404,
        "path": "/x",
        "time": {"$gte": "2026-11-28T00:00:00.000000Z", "$lt": "2026-11-29T00:00:00.000000Z"},
        "$or": [
            {"time": {"$lt": "2026-11-28T08:00:00.000000Z"}},
            {"time": "2026-11-28T08:00:00.000000Z", "_id": {"$lt": "p9"}},
        ],
    }


def test_an_events_data_comes_back_as_the_types_it_went_in_as() -> None:
    event = event_from(
        {
            "time": "2026-11-28T08:00:00.000000Z",
            "kind": "scaled_out",
            "message": "2 workers",
            "data": {"desired": Int64(2), "pids": [Int64(7), True], "nested": {"n": Int64(1)}},
        }
    )
    assert event.data == {"desired": 2, "pids": [7, True], "nested": {"n": 1}}
    assert type(event.data["desired"]) is int and event.data["pids"][1] is True
    with pytest.raises(StoreError, match="is not an event"):
        event_from({"time": 5, "data": {}})


def test_a_failed_batch_names_the_error_that_is_not_a_duplicate() -> None:
    failed = BulkWriteError(
        {
            "writeErrors": [
                {"code": 11000, "errmsg": "E11000 duplicate key"},
                {"code": 121, "errmsg": "Document failed validation"},
            ]
        }
    )
    assert error_detail(failed) == "Document failed validation"


def test_a_server_selection_error_loses_its_topology_dump() -> None:
    error = ServerSelectionTimeoutError("db:27017: timed out, Topology Description: <...>")
    assert error_detail(error) == "db:27017: timed out"


@pytest.mark.parametrize(
    ("hello", "topology", "expected"),
    [
        ({"setName": "rs0", "isWritablePrimary": True}, "ReplicaSetWithPrimary", True),
        ({"msg": "isdbgrid"}, "Sharded", True),
        ({"isWritablePrimary": True}, "Single", False),
        # A replica set member reached with directConnection=true: hello still names the set.
        ({"setName": "rs0"}, "Single", True),
        # No hello (some DocumentDB versions): the driver's topology description decides.
        (None, "ReplicaSetWithPrimary", True),
        (None, "Sharded", True),
        (None, "Single", False),
        (None, "ReplicaSetNoPrimary", False),
        (None, "Unknown", False),
        (None, "LoadBalanced", False),
    ],
)
def test_transactions_where_hello_or_else_the_drivers_topology_says_so(
    hello: dict[str, object] | None, topology: str, expected: bool
) -> None:
    assert topology in TOPOLOGY_TYPE._fields  # the driver's own names
    assert has_transactions(hello, topology) is expected
