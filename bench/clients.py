"""Load and measurement clients: raw HTTP/1.1 on loopback, an open-loop sampler, certificate
hammering threads and the raw key-generation ceiling.

The measuring clients speak HTTP over plain sockets so that the client's own overhead stays
small next to a ~1 ms response; the hammering clients use httpx since only their count matters.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

HEAD_END = b"\r\n\r\n"


def parse_head(head: bytes) -> tuple[int, int | None]:
    """Status code and Content-Length (None when absent) of a response head."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, length


class KeepAliveClient:
    """One persistent HTTP/1.1 connection for sequential GETs with a Content-Length body."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def get(self, path: str) -> tuple[int, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        while HEAD_END not in self.buffer:
            self._read()
        head, _, self.buffer = self.buffer.partition(HEAD_END)
        status, length = parse_head(head)
        if length is None:
            raise RuntimeError(f"GET {path}: response without Content-Length")
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, body

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


async def get_once(host: str, port: int, path: str) -> int:
    """GET on a fresh connection (`Connection: close`); the status if the body is whole."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(HEAD_END)
    status, length = parse_head(head)
    if length is not None and len(body) != length:
        raise ConnectionError(f"short body: {len(body)} of {length} bytes")
    return status


@dataclass
class Samples:
    """What an open-loop sampler saw: latencies of good answers, failures, schedule slips."""

    latencies: list[float] = field(default_factory=list)
    slips: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


def open_loop(host: str, port: int, path: str, rate: float, seconds: float) -> Samples:
    """Send GET `path` at a fixed rate for `seconds`, whether or not earlier ones answered.

    Latency is from the moment a request is sent; how late it was sent against its schedule
    is kept apart (`slips`), since on a shared machine the sampler itself can be delayed.
    Meant to run in its own process so that the load clients' GIL does not delay it.
    """
    return asyncio.run(_open_loop(host, port, path, rate, seconds))


async def _open_loop(host: str, port: int, path: str, rate: float, seconds: float) -> Samples:
    loop = asyncio.get_running_loop()
    samples = Samples()

    async def one(scheduled: float) -> None:
        sent = loop.time()
        samples.slips.append(sent - scheduled)
        try:
            status = await asyncio.wait_for(get_once(host, port, path), timeout=5.0)
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            kind = type(exc).__name__
            samples.failures[kind] = samples.failures.get(kind, 0) + 1
            return
        if status != 200:
            samples.failures[f"HTTP {status}"] = samples.failures.get(f"HTTP {status}", 0) + 1
            return
        samples.latencies.append(loop.time() - sent)

    start = loop.time() + 0.05
    tasks = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return samples


class CertClients:
    """`clients` threads calling /generatecert back to back until stopped."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.clients = clients
        self.done: list[float] = []  # completion times (perf_counter) of 200 answers
        self.busy = 0  # 503 answers
        self.errors: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> CertClients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)

    def completed_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.done if start <= t < end)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            while not self._stop.is_set():
                try:
                    status = client.get("/generatecert").status_code
                except httpx.HTTPError as exc:
                    status, kind = 0, type(exc).__name__
                else:
                    kind = f"HTTP {status}"
                with self._lock:
                    if status == 200:
                        self.done.append(time.perf_counter())
                    elif status == 503:
                        self.busy += 1
                    else:
                        self.errors[kind] = self.errors.get(kind, 0) + 1


def keygen_rate(workers: int, warmup: float, seconds: float) -> float:
    """RSA-2048 keys per second made by `workers` threads (OpenSSL runs without the GIL),
    counted over `seconds` after `warmup`, the same window as the /generatecert figure."""
    done: list[float] = []
    lock = threading.Lock()
    start = time.perf_counter()
    window = (start + warmup, start + warmup + seconds)

    def work() -> None:
        while time.perf_counter() < window[1]:
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            with lock:
                done.append(time.perf_counter())

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(1 for t in done if window[0] <= t < window[1]) / seconds
