"""RSA keys generated ahead in a bounded pool, and the self-signed certificates built on them.

Key generation (tens of milliseconds of CPU) runs in a few threads: `cryptography` releases
the GIL while OpenSSL works, so the event loop keeps serving. A key is handed out once,
lives only in memory, and is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

KEY_SIZE = 2048
DNS_NAME_PATTERN = (
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def generate_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)


class PoolBusy(Exception):
    """Every generator is taken and the wait would exceed the bound: try again later."""

    def __init__(self, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class KeyPool:
    """Spare keys made ahead, and at most `concurrency` generations at once.

    Requests that find no spare key wait in arrival order; one whose estimated wait
    exceeds `max_wait` is refused at once (PoolBusy) instead of queueing without limit.
    """

    def __init__(
        self,
        spare: int,
        concurrency: int,
        max_wait: float,
        generate: Callable[[], rsa.RSAPrivateKey] = generate_key,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.spare_target = spare
        self.concurrency = concurrency
        self.max_wait = max_wait
        self._generate = generate
        self._on_change = on_change or (lambda _n: None)
        self._spares: deque[rsa.RSAPrivateKey] = deque()
        self._waiters: deque[asyncio.Future[rsa.RSAPrivateKey]] = deque()
        self._inflight = 0
        self._demanded = False
        self._seconds_per_key = 0.1  # refined by every generation (moving average)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def spare_count(self) -> int:
        return len(self._spares)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="keygen")
        self._fill()

    def stop(self) -> None:
        for waiter in self._waiters:
            waiter.cancel()
        self._waiters.clear()
        self._spares.clear()
        self._on_change(0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def estimated_wait(self) -> float:
        """Seconds a new request would wait for a key: the queue ahead of it, in rounds."""
        if self._spares:
            return 0.0
        rounds = len(self._waiters) // self.concurrency + 1
        return rounds * self._seconds_per_key

    async def take(self) -> rsa.RSAPrivateKey:
        if self._executor is None:
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
        assert self._loop is not None
        waiter: asyncio.Future[rsa.RSAPrivateKey] = self._loop.create_future()
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
        if self._executor is None or self._loop is None:
            return
        live_waiters = sum(1 for w in self._waiters if not w.done())
        while (
            self._inflight < self.concurrency
            and len(self._spares) + self._inflight < self._target() + live_waiters
        ):
            self._inflight += 1
            future = self._loop.run_in_executor(self._executor, self._timed_generate)
            future.add_done_callback(self._generated)

    def _timed_generate(self) -> tuple[rsa.RSAPrivateKey, float]:
        started = time.perf_counter()
        key = self._generate()
        return key, time.perf_counter() - started

    def _generated(self, future: asyncio.Future[tuple[rsa.RSAPrivateKey, float]]) -> None:
        self._inflight -= 1
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            log.error("RSA key generation failed: %s", error)
            self._fail_one(error)
            return
        key, seconds = future.result()
        self._seconds_per_key = 0.8 * self._seconds_per_key + 0.2 * seconds
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(key)
                break
        else:
            self._spares.append(key)
            self._on_change(len(self._spares))
        self._fill()

    def _fail_one(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                return


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A private key and its self-signed certificate, as handed to the client."""

    key: str
    cert: str
    fingerprint_sha256: str
    not_before: str
    not_after: str
    subject: str


def issue_certificate(
    key: rsa.RSAPrivateKey, common_name: str, days: int, now: datetime | None = None
) -> IssuedCertificate:
    """A self-signed X.509 certificate for `key`, valid `days` days for `common_name`."""
    start = (now or datetime.now(UTC)).replace(microsecond=0)
    end = start + timedelta(days=days)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return IssuedCertificate(
        key=key_pem,
        cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
        fingerprint_sha256=fingerprint,
        not_before=start.isoformat().replace("+00:00", "Z"),
        not_after=end.isoformat().replace("+00:00", "Z"),
        subject=cert.subject.rfc4514_string(),
    )
