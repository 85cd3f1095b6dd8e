from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloud_phoenix.certs.keys import generate_key, issue_certificate
from cloud_phoenix.certs.pool import KeyPool, PoolBusy
from tests.fixtures.certs import new_spare

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


def test_certificate_matches_its_key_and_request() -> None:
    now = datetime(2026, 11, 27, 12, 0, 0, 123, tzinfo=UTC)
    issued = issue_certificate(KEYS[0], "example.org", 30, now=now)
    cert = x509.load_pem_x509_certificate(issued.cert.encode())
    key = serialization.load_pem_private_key(issued.key.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert issued.subject == "CN=example.org"
    assert issued.not_before == "2026-11-27T12:00:00Z"
    assert issued.not_after == "2026-12-27T12:00:00Z"
    assert issued.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.org"]


def test_pool_fills_its_spares_and_hands_each_key_out_once() -> None:
    async def scenario() -> None:
        pool = KeyPool(
            spare=3, concurrency=2, max_wait=5, make=lambda: asyncio.to_thread(generate_key)
        )
        pool.start()
        try:
            await asyncio.sleep(0.2)
            assert pool.spare_count == 0  # no key is made before the first request
            first = await pool.take()
            for _ in range(100):
                if pool.spare_count == 3:
                    break
                await asyncio.sleep(0.05)
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
            await asyncio.sleep(0.1)
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
        await asyncio.sleep(0.05)
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
            await asyncio.sleep(0.01)
        for _ in range(3):
            gen.gate.release()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert order == [0, 1, 2]
        pool.stop()

    asyncio.run(scenario())


def test_a_spare_comes_with_a_ready_certificate_for_the_defaults_only_while_fresh() -> None:
    spare = new_spare()
    assert spare.certificate("localhost", 365, spare.made + 1) is spare.ready
    assert spare.certificate("example.org", 365, spare.made + 1) is None
    assert spare.certificate("localhost", 30, spare.made + 1) is None
    assert spare.certificate("localhost", 365, spare.made + 3600) is None
    cert = x509.load_pem_x509_certificate(spare.ready.cert.encode())
    key = spare.private_key()
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    handed_out = serialization.load_pem_private_key(spare.ready.key.encode(), password=None)
    assert isinstance(handed_out, rsa.RSAPrivateKey)
    assert handed_out.private_numbers() == key.private_numbers()  # the DER is that key
