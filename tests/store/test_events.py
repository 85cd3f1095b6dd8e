"""The `events` part of the LogStore contract, run against SQLite, PostgreSQL and MongoDB.

Each test gets an empty, migrated store of each kind, as in the logs contract suite
(MongoDB only when PHOENIX_TEST_MONGODB_URL is set). Checks that need no server (invalid
events, unreachable databases) run for MongoDB here too.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_phoenix.journal import format_time
from cloud_phoenix.store import Event, LogStore, StoreError, StoreUnavailable, open_store
from tests.fixtures.stores import BACKENDS
from tests.store.test_contract import SECRET, unreachable_url

pytestmark = pytest.mark.integration

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ELLIPSIS = "\u2026"


def at(seconds: float) -> str:
    """The stored form of T0 + seconds."""
    return format_time(T0 + timedelta(seconds=seconds))


def event(seconds: float, kind: str = "worker_restarted", message: str = "", **data: Any) -> Event:
    return Event(at(seconds), kind, message or f"{kind} at +{seconds}s", data)


def newest_first(added: list[Event]) -> list[Event]:
    """The order `events()` promises: time descending, then the later insertion first."""
    order = sorted(enumerate(added), key=lambda item: (item[1].time, item[0]), reverse=True)
    return [item for _, item in order]


# -- round trip and order -----------------------------------------------------------------

DATA: dict[str, Any] = {
    "pid": 4242,
    "pids": [4242, 4243, 4250],
    "exit": {"code": -9, "signal": "SIGKILL", "core": False, "after": None},
    "duration_s": 0.1 + 0.2,
    "tiny": 5e-324,
    "huge": 1e300,
    "negative_zero": -0.0,
    "big": 2**63 - 1,
    "small": -(2**63),
    "empty": {"list": [], "dict": {}, "text": ""},
    "caf\u00e9 \u8def\u5f84": ["\U0001f525", "tab\there", 'quote " and \\ backslash', "nul\x00in"],
    "deep": {"a": {"b": {"c": [[1, [2, [3, {"d": "\u202eright-to-left"}]]]]}}},
    "$dollar": "a key that looks like an operator",
}


def test_an_event_round_trips_exactly(store: LogStore, connect: Callable[[], LogStore]) -> None:
    assert isinstance(store, LogStore)
    assert store.events() == []
    added = Event(
        at(1),
        "child_restarted",
        "haproxy died (exit 137) and rose again \u2014 caf\u00e9 \U0001f680 \"q\" 'q'\nline 2",
        DATA,
    )

    store.add_event(added)

    assert store.events() == [added]
    [read] = connect().events()  # another connection, as another process would read it
    assert read == added
    assert read.data == DATA
    assert type(read.data["big"]) is int
    assert math.copysign(1.0, read.data["negative_zero"]) == -1.0
    assert store.count() == 0  # events are not logs


def test_data_comes_back_in_its_json_form(store: LogStore) -> None:
    loose: dict[Any, Any] = {"pids": (1, 2), 7: "x"}  # what json.dumps accepts and rewrites
    store.add_event(Event(at(1), "scaled_out", "tuples and int keys", loose))

    [read] = store.events()

    assert read.data == {"pids": [1, 2], "7": "x"}


def test_events_are_newest_first_with_ties_newest_inserted_first(store: LogStore) -> None:
    seconds = [3, 1, 3, 2, 1, 3, 0.000001, 2, 1]
    added = [event(s, message=f"event {i}", index=i) for i, s in enumerate(seconds)]
    for item in added:
        store.add_event(item)

    result = store.events()

    assert result == newest_first(added)
    assert [e.data["index"] for e in result] == [5, 2, 0, 7, 3, 8, 4, 1, 6]


def test_kind_filter(store: LogStore) -> None:
    kinds = ["worker_restarted", "scaled_out", "worker_restarted", "child_restarted", "scaled_in"]
    added = [event(i % 3, kind=kind, index=i) for i, kind in enumerate(kinds * 3)]
    for item in added:
        store.add_event(item)

    for kind in set(kinds):
        expected = [e for e in newest_first(added) if e.kind == kind]
        assert store.events(kind=kind) == expected, kind
    assert store.events(kind="backup_done") == []
    assert store.events(kind="worker") == []  # whole kinds only, not prefixes
    assert store.events(kind="'; DROP TABLE events; --") == []


def test_since_filter_is_inclusive(store: LogStore) -> None:
    added = [event(s, kind="scaled_out" if s % 2 else "scaled_in") for s in (5, 1, 4, 2, 3, 2)]
    for item in added:
        store.add_event(item)
    ordered = newest_first(added)

    assert store.events(since=at(2)) == [e for e in ordered if e.time >= at(2)]
    assert [e.time for e in store.events(since=at(2))][-2:] == [at(2), at(2)]
    assert store.events(since=at(2), kind="scaled_out") == [
        e for e in ordered if e.time >= at(2) and e.kind == "scaled_out"
    ]
    assert store.events(since=at(6)) == []
    assert store.events(since=at(0)) == ordered
    # A bare date is a prefix of every time that day, so it reads as "since midnight".
    assert store.events(since="2024-05-01") == ordered
    assert store.events(since="2024-05-02") == []


def test_limit(store: LogStore) -> None:
    added = [event(i % 7, index=i) for i in range(60)]
    for item in added:
        store.add_event(item)
    ordered = newest_first(added)

    assert store.events() == ordered[:50]  # the default
    for limit in (1, 2, 7, 59, 60, 1000):
        assert store.events(limit=limit) == ordered[:limit], limit
    assert (
        store.events(limit=3, kind="worker_restarted", since=at(3))
        == [e for e in ordered if e.time >= at(3)][:3]
    )
    for bad in (0, -1, 1001):
        with pytest.raises(ValueError, match=r"1\.\.1000"):
            store.events(limit=bad)


def test_migrate_twice_keeps_events(store: LogStore, connect: Callable[[], LogStore]) -> None:
    added = [event(1, index=0), event(2, kind="scaled_out", index=1)]
    for item in added:
        store.add_event(item)

    store.migrate()
    other = connect()
    other.migrate()
    other.migrate()

    assert other.events() == newest_first(added)
    other.add_event(later := event(3, index=2))
    assert store.events(limit=1) == [later]


# -- what is kept, what is refused --------------------------------------------------------


def test_a_long_message_is_truncated_not_refused(store: LogStore) -> None:
    long = "\U0001f525 " + "x" * 4000 + " the end"
    exact = "y" * 2000
    store.add_event(event(1, message=long))
    store.add_event(event(2, message=exact))
    store.add_event(event(3, message="z" * 2001))

    truncated, untouched, just_over = reversed(store.events())

    assert len(truncated.message) == 2000
    assert truncated.message == long[:1999] + ELLIPSIS
    assert untouched.message == exact
    assert just_over.message == "z" * 1999 + ELLIPSIS


def test_odd_text_in_a_message_does_not_lose_the_event(store: LogStore) -> None:
    # PostgreSQL text cannot hold NUL, and no database stores a lone surrogate: a store may
    # replace either, but the event must be recorded.
    store.add_event(event(1, message="nul\x00here"))
    store.add_event(event(2, message="lone \udc80 surrogate"))

    nul, surrogate = reversed(store.events())

    assert nul.message in {"nul\x00here", "nul\ufffdhere"}
    assert surrogate.message == "lone \ufffd surrogate"


def test_kind_length_is_checked(store: LogStore) -> None:
    for bad in ("", "k" * 65):
        with pytest.raises(StoreError, match="kind") as raised:
            store.add_event(event(1, kind=bad))
        assert not isinstance(raised.value, StoreUnavailable)
    store.add_event(longest := event(1, kind="k" * 64))

    assert store.events() == [longest]


class Opaque:
    """Something json cannot write."""


def circular() -> dict[str, Any]:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


NOT_STORABLE: dict[str, tuple[dict[str, Any], str]] = {
    "set": ({"pids": {1, 2}}, "JSON-serialisable"),
    "object": ({"child": Opaque()}, "JSON-serialisable"),
    "bytes": ({"raw": b"\x00\x01"}, "JSON-serialisable"),
    "nan": ({"cpu": float("nan")}, "JSON-serialisable"),
    "infinity": ({"rate": float("inf")}, "JSON-serialisable"),
    "circular": (circular(), "JSON-serialisable"),
    "int over 64 bits": ({"n": 2**64}, "64 bits"),
    "lone surrogate": ({"text": "\udc80"}, "surrogate"),
    "nul in a key": ({"a\x00b": 1}, "NUL"),
}


@pytest.mark.parametrize("name", NOT_STORABLE)
def test_data_that_cannot_be_stored_is_refused(store: LogStore, name: str) -> None:
    data, says = NOT_STORABLE[name]
    with pytest.raises(StoreError, match=says) as raised:
        store.add_event(Event(at(1), "cpu_peak", "refused", data))
    assert not isinstance(raised.value, StoreUnavailable)
    assert store.events() == []


def test_a_malformed_time_is_refused(store: LogStore) -> None:
    for bad in ("2024-05-01 12:00:00", T0.isoformat(), ""):
        with pytest.raises(StoreError, match="format_time"):
            store.add_event(Event(bad, "scaled_out", "bad time", {}))
    assert store.events() == []


# -- several writers ----------------------------------------------------------------------


def test_events_from_two_stores_interleave(
    store: LogStore, connect: Callable[[], LogStore]
) -> None:
    other = connect()  # another process's store object, on its own connections
    writers = [store, other]
    seconds = [1, 1, 2, 1, 3, 3, 2, 4, 4, 1]
    added: list[Event] = []
    for i, s in enumerate(seconds):
        item = event(s, kind=f"from_{i % 2}", index=i)
        writers[i % 2].add_event(item)
        added.append(item)

    assert store.events() == newest_first(added)
    assert other.events() == newest_first(added)
    assert other.events(kind="from_0") == [e for e in newest_first(added) if e.kind == "from_0"]


def test_concurrent_writers_lose_nothing(store: LogStore, connect: Callable[[], LogStore]) -> None:
    writers = [store, connect(), connect()]
    per_writer = 30
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def write(number: int, writer: LogStore) -> None:
        barrier.wait()
        try:
            for i in range(per_writer):
                # Every writer uses the same clock readings: ties across writers on purpose.
                writer.add_event(event(i, kind=f"writer_{number}", index=i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=item) for item in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    result = store.events(limit=1000)
    assert len(result) == per_writer * len(writers)
    assert [e.time for e in result] == sorted((e.time for e in result), reverse=True)
    for number in range(len(writers)):
        mine = [e.data["index"] for e in result if e.kind == f"writer_{number}"]
        assert mine == list(reversed(range(per_writer)))


# -- no server needed ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BACKENDS)
def test_an_unreachable_store_raises_store_unavailable(name: str, tmp_path: Path) -> None:
    store = open_store(unreachable_url(name, tmp_path))
    try:
        for operation in (lambda: store.add_event(event(1)), store.events):
            with pytest.raises(StoreUnavailable) as raised:
                operation()
            assert str(raised.value)
            assert SECRET not in str(raised.value)
    finally:
        store.close()


@pytest.mark.parametrize("name", BACKENDS)
def test_invalid_events_are_refused_before_the_database_is_asked(name: str, tmp_path: Path) -> None:
    # So a caller can tell an event to drop (StoreError) from a store to wait for
    # (StoreUnavailable) even while the database is down.
    store = open_store(unreachable_url(name, tmp_path))
    try:
        for bad in (event(1, kind=""), Event(at(1), "cpu_peak", "m", {"s": {1}})):
            with pytest.raises(StoreError) as raised:
                store.add_event(bad)
            assert not isinstance(raised.value, StoreUnavailable)
        with pytest.raises(ValueError):
            store.events(limit=0)
    finally:
        store.close()
