"""Wait until the store holds everything the journal has: what a pod's preStop runs before
its emptyDir, and the journal on it, goes with the pod (`phoenix collect --drain SECONDS`).

It collects nothing itself: the stack's collector keeps running until SIGTERM, and a second
collector would only race it for the same batches. It reads the store's positions and the
journal's sizes until they match, and gives up at the deadline, so that a drain during a
long database outage ends, and says what it leaves behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloud_phoenix.config import Settings
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.store import StoreError, open_store

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # the collector's passes are 0.2 s apart: a second is enough to notice


@dataclass(frozen=True, slots=True)
class Drained:
    """How a drain ended: everything collected, or what was left at the deadline."""

    collected: bool
    bytes_left: int | None  # None: the store never answered
    waited: float


def wait_collected(
    settings: Settings,
    within: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> Drained:
    """Poll until the store's positions cover every journal file, at most `within` s."""
    started = clock()
    left: int | None = None
    migrated = False
    while True:
        try:
            left = _bytes_left(settings, migrate=not migrated)
            migrated = True
        except StoreError as exc:
            log.warning("drain: the store does not answer, the journal waits: %s", exc)
        if left == 0:
            return Drained(True, 0, clock() - started)
        remaining = started + within - clock()
        if remaining <= 0:
            return Drained(False, left, clock() - started)
        pause(min(POLL_SECONDS, remaining))


def _bytes_left(settings: Settings, migrate: bool) -> int:
    """The journal's bytes beyond the store's positions; the first time, the store's tables
    made if there are none yet (a store nobody has written to holds nothing)."""
    store = open_store(settings.db_url)
    try:
        if migrate:
            store.migrate()
        return measure_lag(store.positions, settings.journal_dir, datetime.now(UTC)).bytes
    finally:
        store.close()
