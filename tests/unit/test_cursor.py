from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_phoenix.store.base import Cursor, redact_url


@given(
    st.datetimes()
    .map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    .filter(lambda s: len(s) == 27),
    st.integers(0, 10**12 - 1),
)
def test_cursor_round_trip(time: str, offset: int) -> None:
    cursor = Cursor(time, f"2026-11-27:{offset:012d}")
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("text", ["", "zzz", "%%%", "aGVsbG8", Cursor("x" * 27, "y").encode()])
def test_foreign_cursors_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        Cursor.decode(text)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://user:secret@db.example:5432/phoenix?sslmode=require",
            "postgresql://db.example:5432",
        ),
        ("mongodb://admin:secret@mongo/phoenix", "mongodb://mongo"),
        ("sqlite:////var/lib/phoenix.db", "sqlite"),
        ("mongodb://u:secret@h1:27017,h2:27018/db?replicaSet=rs", "mongodb://h1:27017,h2:27018"),
        ("mongodb://u:p@ss:secret@[::1]:27017/db", "mongodb://[::1]:27017"),
        ("postgresql:///phoenix?host=/run/postgresql&password=secret", "postgresql://"),
    ],
)
def test_redacted_urls_show_no_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)
