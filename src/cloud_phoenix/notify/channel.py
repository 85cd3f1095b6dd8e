"""One notification channel: a bounded queue delivered in order by a thread of its own.

A channel retries a failed delivery with backoff (RetryPolicy) and gives a
notice up after its attempts or its age; when its queue is full the oldest notice is
dropped, with a log line. What "deliver" means (an Apprise URL, the events store) is the
caller's function.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.proc.backoff import Backoff
from cloud_phoenix.store.base import Event

log = logging.getLogger(__name__)

QUEUE_SIZE = 100


@dataclass(frozen=True, slots=True)
class RetryPolicy(Backoff):
    """The backoff between attempts (first_delay, x factor, at most max_delay), and when a
    notice is given up: after max_attempts, or once older than max_age."""

    first_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    max_attempts: int = 8
    max_age: float = 600.0  # seconds after `send`: an older notice is given up

    def __post_init__(self) -> None:
        Backoff.__post_init__(self)  # the class slots=True makes has no cell for super()
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not (math.isfinite(self.max_age) and self.max_age >= 0):
            raise ValueError(f"max_age must be 0 or more seconds, got {self.max_age}")


@dataclass(frozen=True, slots=True)
class Job:
    """A notice on its way: the notice, its event form, when it was queued (monotonic)."""

    notice: Notice
    event: Event
    queued_at: float


class Channel:
    """One destination: a bounded queue and the thread that delivers it in order."""

    def __init__(
        self,
        name: str,
        deliver: Callable[[Job], None],
        retry: RetryPolicy,
        monotonic: Callable[[], float],
        queue_size: int,
    ) -> None:
        self.name = name
        self._deliver = deliver
        self._retry = retry
        self._monotonic = monotonic
        self._queue: deque[Job] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self.sent = self.failed = self.retried = self.dropped = 0
        self.last_error: str | None = None
        self.thread = threading.Thread(target=self._serve, name=f"notify {name}", daemon=True)
        self.thread.start()

    def put(self, job: Job) -> None:
        with self._cond:
            if self._closing:
                self.dropped += 1
                log.warning("notifier closed: %r not sent to %s", job.notice.title, self.name)
                return
            if len(self._queue) >= self._queue_size:
                oldest = self._queue.popleft()
                self.dropped += 1
                log.warning(
                    "notification queue for %s is full (%d): dropped the oldest, %r",
                    self.name,
                    self._queue_size,
                    oldest.notice.title,
                )
            self._queue.append(job)
            self._cond.notify()

    def begin_close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def abort(self) -> int:
        """Stop waiting between retries and abandon the queue; returns how many were left."""
        self._abort.set()
        with self._cond:
            left = len(self._queue)
            self._queue.clear()
            self.dropped += left
            self._cond.notify()
        return left

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
            try:
                self._deliver_with_retry(job)
            except Exception:  # a bug here must not kill the channel for good
                log.exception("notification channel %s failed unexpectedly", self.name)

    def _deliver_with_retry(self, job: Job) -> None:
        # sent, failed, retried have one writer, this thread: no lock (readers see an int).
        retry, reason, attempt = self._retry, "", 0
        while attempt < retry.max_attempts:
            attempt += 1
            try:
                self._deliver(job)
            except Exception as exc:
                reason = str(exc) or type(exc).__name__
            else:
                self.sent += 1
                self.last_error = None
                return
            self.last_error = reason
            if attempt == retry.max_attempts or self._monotonic() - job.queued_at >= retry.max_age:
                break
            delay = retry.delay(attempt)
            self.retried += 1
            log.warning(
                "notification %r to %s failed (attempt %d of %d): %s; retrying in %.1f s",
                *(job.notice.title, self.name, attempt, retry.max_attempts, reason, delay),
            )
            if self._abort.wait(delay):
                reason += "; the notifier closed before the retry"
                break
        self.failed += 1
        log.error(
            "notification %r to %s failed for good after %d attempt(s): %s",
            *(job.notice.title, self.name, attempt, reason),
        )
