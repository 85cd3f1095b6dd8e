from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_phoenix.journal import file_name, format_time, position_key
from cloud_phoenix.store.base import (
    CURSOR_MAX_LENGTH,
    CURSOR_PATTERN,
    Cursor,
    Event,
    StoreError,
    prepare_event,
)


@given(
    st.datetimes()
    .map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    .filter(lambda s: len(s) == 27),
    st.integers(0, 10**12 - 1),
)
def test_cursor_round_trip(time: str, offset: int) -> None:
    cursor = Cursor(time, f"2026-11-27:{offset:012d}")
    assert Cursor.decode(cursor.encode()) == cursor


GOOD = Cursor("2026-11-27T10:00:00.123456Z", "2026-11-27:web-1:000000001234").encode()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "zzz",
        "%%%",
        "aGVsbG8",
        Cursor("x" * 27, "y").encode(),
        GOOD + "\n",  # Python's `$` alone would let a trailing newline through
        GOOD.replace("2026", "\u0662\u0660\u0662\u0666", 1),  # Arabic-Indic digits are \d too
        GOOD.replace("web-1", "w" * 64),
    ],
)
def test_foreign_cursors_are_refused(text: str) -> None:
    assert re.fullmatch(CURSOR_PATTERN, text) is None
    with pytest.raises(ValueError, match="not a cursor"):
        Cursor.decode(text)


@given(st.from_regex(CURSOR_PATTERN.removeprefix("^").removesuffix("$"), fullmatch=True))
def test_what_the_document_allows_is_a_cursor(text: str) -> None:
    # The API document declares `before` with CURSOR_PATTERN and CURSOR_MAX_LENGTH: any
    # string it allows must page, never be refused as "not a cursor".
    assert len(text) <= CURSOR_MAX_LENGTH
    assert Cursor.decode(text).encode() == text


def test_the_longest_cursor_the_application_hands_out_fits() -> None:
    moment = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    pos = position_key(file_name(moment, instance="i" * 63), 10**12 - 1)
    longest = Cursor(format_time(moment), pos).encode()
    assert len(longest) == CURSOR_MAX_LENGTH
    assert Cursor.decode(longest) == Cursor(format_time(moment), pos)
    assert re.fullmatch(CURSOR_PATTERN, longest)


@pytest.mark.parametrize("time", ["2026-11-27T10:00:00.123456Z\n", "2026-11-27T10:00:00.123456"])
def test_an_event_time_is_refused_unless_it_is_the_journals_form_alone(time: str) -> None:
    # The stores compare times as text: a trailing newline would sort it apart from its time.
    with pytest.raises(StoreError, match="format_time"):
        prepare_event(Event(time, "worker_restarted", "m"))
    good = Event("2026-11-27T10:00:00.123456Z", "worker_restarted", "m")
    assert prepare_event(good)[0] == good
