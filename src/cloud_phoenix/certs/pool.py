"""A bounded pool of expensive items (RSA keys) made ahead, in the background.

The pool decides when and how many: spares ahead of demand, at most `concurrency` being
made at once, waiters in arrival order, a refusal instead of a wait beyond the bound. The
making itself is an awaitable `make()`: for the server, the key maker's child process at
idle priority (certs/keymaker.py), so the event loop keeps serving. Each item is handed out once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_AFTER_FAILURE = 1.0  # seconds before the next try after a failed generation


class PoolBusy(Exception):
    """Every generator is taken and the wait would exceed the bound: try again later."""

    def __init__(self, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class KeyPool(Generic[T]):
    """Spare items (keys) made ahead, and at most `concurrency` generations at once.

    Requests that find no spare key wait in arrival order; one whose estimated wait
    exceeds `max_wait` is refused at once (PoolBusy) instead of queueing without limit.
    """

    def __init__(
        self,
        spare: int,
        concurrency: int,
        max_wait: float,
        make: Callable[[], Awaitable[T]],
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.spare_target = spare
        self.concurrency = concurrency
        self.max_wait = max_wait
        self._make = make
        self._on_change = on_change or (lambda _n: None)
        self._spares: deque[T] = deque()
        self._waiters: deque[asyncio.Future[T]] = deque()
        self._demanded = False
        self._seconds_per_key = 0.1  # refined by every generation (moving average)
        self._making: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def spare_count(self) -> int:
        return len(self._spares)

    @property
    def in_flight(self) -> int:
        """Generations under way (a finished one leaves the set before its result is used,
        so that `_fill` may start the next)."""
        return len(self._making)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fill()

    def stop(self) -> None:
        self._loop = None
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        for task in self._making:
            task.cancel()
        self._spares.clear()
        self._on_change(0)

    def estimated_wait(self) -> float:
        """Seconds a new request would wait for a key: the queue ahead of it, in rounds."""
        if self._spares:
            return 0.0
        rounds = len(self._waiters) // self.concurrency + 1
        return rounds * self._seconds_per_key

    def take_ready(self, usable: Callable[[T], bool]) -> T | None:
        """The oldest spare if there is one and `usable(spare)`; None otherwise (nothing is
        taken then). For callers that answer at once or not at all."""
        if self._loop is None or not self._spares or not usable(self._spares[0]):
            return None
        self._demanded = True
        spare = self._spares.popleft()
        self._on_change(len(self._spares))
        # The refill is queued behind this request's answer, not ahead of it.
        asyncio.get_running_loop().call_soon(self._fill)
        return spare

    async def take(self) -> T:
        if self._loop is None:
            raise RuntimeError("the key pool is not started")
        self._demanded = True
        if self._spares:
            key = self._spares.popleft()
            self._on_change(len(self._spares))
            self._fill()
            return key
        wait = self.estimated_wait()
        if wait > self.max_wait:
            raise PoolBusy(
                max(1, math.ceil(wait)),
                f"{len(self._waiters)} certificate requests are already waiting; "
                f"the wait would be about {wait:.1f} s",
            )
        waiter: asyncio.Future[T] = self._loop.create_future()
        self._waiters.append(waiter)
        self._fill()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout=self.max_wait)
        except TimeoutError:
            raise PoolBusy(
                max(1, math.ceil(self._seconds_per_key * 2)),
                f"no key could be generated within {self.max_wait:g} s",
            ) from None
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _target(self) -> int:
        # Spares are made only once this process has been asked for a certificate: a worker
        # that never serves one (or is replaced after a /crash, several times a second in a
        # drill) must not burn a core on keys nobody takes.
        return self.spare_target if self._demanded else 0

    def _fill(self) -> None:
        if self._loop is None:
            return
        live_waiters = sum(1 for w in self._waiters if not w.done())
        while (
            self.in_flight < self.concurrency
            and len(self._spares) + self.in_flight < self._target() + live_waiters
        ):
            task = self._loop.create_task(self._make_one())
            self._making.add(task)
            task.add_done_callback(self._making.discard)  # cancelled ones (stop) too

    async def _make_one(self) -> None:
        started = time.perf_counter()
        try:
            item = await self._make()
        except Exception as exc:
            log.error("RSA key generation failed: %s", exc)
            self._fail_one(exc)
            if self._loop is not None:  # not at once: a maker that keeps failing is no
                self._loop.call_later(RETRY_AFTER_FAILURE, self._fill)  # busy loop
            return
        finally:  # no longer in flight, before the _fill below counts
            self._making.discard(asyncio.current_task())
        seconds = time.perf_counter() - started
        self._seconds_per_key = 0.8 * self._seconds_per_key + 0.2 * seconds
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                break
        else:
            self._spares.append(item)
            self._on_change(len(self._spares))
        self._fill()

    def _fail_one(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                return
