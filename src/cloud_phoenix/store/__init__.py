"""Log and event stores behind one protocol; `open_store` picks one by the URL's scheme."""

from __future__ import annotations

from cloud_phoenix.store.base import (
    Cursor,
    Event,
    LogQuery,
    LogRow,
    LogStore,
    PositionConflict,
    StoreError,
    StoreUnavailable,
)
from cloud_phoenix.store.urls import redact_url, url_scheme

__all__ = [
    "Cursor",
    "Event",
    "LogQuery",
    "LogRow",
    "LogStore",
    "PositionConflict",
    "StoreError",
    "StoreUnavailable",
    "open_store",
    "redact_url",
]


def open_store(url: str) -> LogStore:
    """The store for `url`: sqlite:///path, postgresql://..., mongodb:// or mongodb+srv://."""
    scheme = url_scheme(url)
    if scheme == "sqlite":
        from cloud_phoenix.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if scheme in {"postgresql", "postgres"}:
        from cloud_phoenix.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    if scheme in {"mongodb", "mongodb+srv"}:
        from cloud_phoenix.store.mongodb import MongoStore

        return MongoStore.from_url(url)
    raise StoreError(
        f"unsupported database URL scheme {scheme or '(none)'!r}: use sqlite:///path, "
        "postgresql://user:password@host/db or mongodb://host/db"
    )
