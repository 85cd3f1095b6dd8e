"""The supervisor's events: to the server log at once, to the status, and to the store's
`events` as soon as it answers (kept in memory, bounded, while it does not)."""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

from cloud_phoenix.journal import format_time
from cloud_phoenix.store import Event, LogStore, StoreError, StoreUnavailable

log = logging.getLogger(__name__)

MAX_PENDING = 1000


class EventLog:
    """`record()` may be called from any thread (deque appends are atomic); `flush()` from
    the supervisor's loop only."""

    def __init__(self, store: LogStore | None, recent: int = 20) -> None:
        self.store = store
        self.pending: deque[Event] = deque(maxlen=MAX_PENDING)
        self.recent: deque[Event] = deque(maxlen=recent)
        self._store_ready = False

    def record(self, kind: str, message: str, data: dict[str, Any]) -> None:
        event = Event(format_time(datetime.now(UTC)), kind, message, data)
        log.info("event %s: %s", kind, message)
        self.pending.append(event)
        self.recent.append(event)

    def flush(self) -> None:
        """Write what is pending; stop at the first sign that the store is away."""
        if self.store is None or not self.pending:
            return
        if not self._store_ready:
            try:
                self.store.migrate()
            except StoreError as exc:
                log.debug("events wait for the store: %s", exc)
                return
            self._store_ready = True
        while self.pending:
            try:
                self.store.add_event(self.pending[0])
            except StoreUnavailable as exc:
                log.debug("events wait for the store: %s", exc)
                self._store_ready = False
                return
            except StoreError as exc:  # this event can never be stored: do not block the rest
                log.error("event dropped from the store (kept in this log): %s", exc)
            self.pending.popleft()
