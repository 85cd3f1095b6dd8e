"""The daily backup at PHOENIX_BACKUP_AT (local time), for the supervisor's loop.

`next_run` is pure. `DailyBackups.tick()` is the shell: the supervisor calls it from its
loop (every second is fine); when the time has come it starts `run_backup` in a thread
and returns at once, so a long backup never stalls supervision. A run that is missed
(the stack was not running at that time) is not made up: the next one is the next day's.
PHOENIX_BACKUP_AT=off schedules none (in a cluster, backups are a service of their own).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cloud_phoenix.backup.errors import BackupError
from cloud_phoenix.backup.runner import BackupResult, Notify, RecordEvent, run_backup
from cloud_phoenix.config import BACKUP_OFF, Settings

log = logging.getLogger(__name__)


def next_run(now: datetime, at: str) -> datetime:
    """The first local HH:MM strictly after `now` (naive local time in, naive local out).

    Naive wall-clock arithmetic: 03:00 stays 03:00 across a DST change. On the night the
    clocks go forward past `at`, the nonexistent time is still returned and simply passes.
    """
    hours, _, minutes = at.partition(":")
    candidate = now.replace(hour=int(hours), minute=int(minutes), second=0, microsecond=0)
    if candidate <= now:
        candidate += timedelta(days=1)
    return candidate


class DailyBackups:
    """Starts one backup a day in a background thread; never two at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        notify: Notify | None = None,
        record_event: RecordEvent | None = None,
        clock: Callable[[], datetime] = datetime.now,
        runner: Callable[..., BackupResult] = run_backup,
    ) -> None:
        self.settings = settings
        self.notify = notify
        self.record_event = record_event
        self._clock = clock
        self._runner = runner
        self.next_at: datetime | None = (
            None if settings.backup_at == BACKUP_OFF else next_run(clock(), settings.backup_at)
        )
        self.last_result: BackupResult | None = None
        self.last_error: BackupError | None = None
        self._thread: threading.Thread | None = None
        self.failures = 0  # for /metrics

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self) -> bool:
        """Start the day's backup if it is due and none runs; True when one was started."""
        if self.next_at is None:
            return False
        now = self._clock()
        if now < self.next_at or self.running:
            return False
        self.next_at = next_run(now, self.settings.backup_at)
        self._thread = threading.Thread(target=self._run, name="daily-backup", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        kwargs: dict[str, Any] = {"notify": self.notify, "record_event": self.record_event}
        try:
            self.last_result = self._runner(self.settings, **kwargs)
            self.last_error = None
        except BackupError as exc:
            # run_backup has already notified and recorded it; the next day tries again.
            self.last_error = exc
            self.failures += 1
            log.error("daily backup failed: %s", exc)
        except Exception:  # a bug must not kill the thread silently
            log.exception("daily backup crashed")

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running backup (on shutdown: a backup cut short leaves only temp files)."""
        if self._thread is not None:
            self._thread.join(timeout)
