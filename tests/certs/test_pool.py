"""The key pool's decisions (spares, concurrency, refusals, arrival order) with real keys
handed out on the test's signal."""

from __future__ import annotations

import asyncio
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cloud_phoenix.certs.keys import generate_key
from cloud_phoenix.certs.pool import KeyPool, PoolBusy
from tests.fixtures.waiting import eventually_async

KEYS = [generate_key() for _ in range(3)]


class GatedGenerator:
    """Hands out real keys, but only when the test opens the gate: the pool's timing, controlled."""

    def __init__(self) -> None:
        self.gate = threading.Semaphore(0)
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> rsa.RSAPrivateKey:
        self.gate.acquire(timeout=10)
        with self.lock:
            self.calls += 1
            return KEYS[self.calls % len(KEYS)]


def test_pool_fills_its_spares_and_hands_each_key_out_once() -> None:
    async def scenario() -> None:
        pool = KeyPool(
            spare=3, concurrency=2, max_wait=5, make=lambda: asyncio.to_thread(generate_key)
        )
        pool.start()
        try:
            # Time passes on purpose: no key may be made before the first request.
            await asyncio.sleep(0.2)
            assert pool.spare_count == 0
            first = await pool.take()
            await eventually_async(lambda: pool.spare_count >= 3, what="3 spare keys")
            assert pool.spare_count == 3
            keys = [first, *[await pool.take() for _ in range(5)]]
            assert len({k.private_numbers().d for k in keys}) == 6
        finally:
            pool.stop()

    asyncio.run(scenario())


def test_pool_never_runs_more_generations_than_its_concurrency() -> None:
    gen = GatedGenerator()

    async def scenario() -> None:
        pool = KeyPool(spare=10, concurrency=2, max_wait=5, make=lambda: asyncio.to_thread(gen))
        pool.start()
        try:
            waiter = asyncio.ensure_future(pool.take())
            # The pool starts what it may in one go: once two run, a third would be there too.
            await eventually_async(lambda: pool.in_flight >= 2, what="two generations")
            assert pool.in_flight == 2
        finally:
            for _ in range(20):
                gen.gate.release()
            await waiter
            pool.stop()

    asyncio.run(scenario())


def test_pool_refuses_at_once_when_the_wait_would_be_too_long() -> None:
    gen = GatedGenerator()

    async def scenario() -> None:
        pool = KeyPool(spare=0, concurrency=1, max_wait=1.0, make=lambda: asyncio.to_thread(gen))
        pool._seconds_per_key = 0.4  # as if measured: three rounds exceed the bound
        pool.start()
        waiters = [asyncio.ensure_future(pool.take()) for _ in range(2)]
        await eventually_async(
            lambda: pool.estimated_wait() > pool.max_wait, what="two waiters in the queue"
        )
        with pytest.raises(PoolBusy) as refused:
            await pool.take()
        assert refused.value.retry_after >= 1
        for _ in range(4):
            gen.gate.release()
        keys = await asyncio.gather(*waiters)
        assert len(keys) == 2
        pool.stop()

    asyncio.run(scenario())


def test_pool_times_out_a_waiter_with_busy_not_a_hang() -> None:
    gen = GatedGenerator()

    async def scenario() -> None:
        pool = KeyPool(spare=0, concurrency=1, max_wait=0.3, make=lambda: asyncio.to_thread(gen))
        pool._seconds_per_key = 0.01
        pool.start()
        with pytest.raises(PoolBusy, match="within"):
            await pool.take()
        gen.gate.release()
        gen.gate.release()
        pool.stop()

    asyncio.run(scenario())


def test_waiters_are_served_in_arrival_order() -> None:
    gen = GatedGenerator()

    async def scenario() -> None:
        pool = KeyPool(spare=0, concurrency=1, max_wait=5, make=lambda: asyncio.to_thread(gen))
        pool.start()
        order: list[int] = []

        async def take(n: int) -> None:
            await pool.take()
            order.append(n)

        tasks = []
        for n in range(3):
            tasks.append(asyncio.ensure_future(take(n)))
            # Each in the queue before the next arrives.
            await eventually_async(lambda: len(pool._waiters) == len(tasks), what=f"waiter {n}")
        for _ in range(3):
            gen.gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order == [0, 1, 2]
        pool.stop()

    asyncio.run(scenario())
