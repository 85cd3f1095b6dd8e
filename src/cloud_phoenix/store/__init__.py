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
from cloud_phoenix.store.urls import redact_url, url_backend

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
    try:
        backend = url_backend(url)
    except ValueError as exc:
        raise StoreError(str(exc)) from None
    if backend == "sqlite":
        from cloud_phoenix.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if backend == "postgresql":
        from cloud_phoenix.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    from cloud_phoenix.store.mongodb import MongoStore

    return MongoStore.from_url(url)
