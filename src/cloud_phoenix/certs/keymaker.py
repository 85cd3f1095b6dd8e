"""RSA keys made in a child process at idle CPU priority, handed to the server over a pipe.

Why a process and not threads of the server: threads share the server's session, hence its
scheduling group, and SCHED_IDLE yields only within a group; the certificate's signing and
serialisation also ran under the server's GIL. The child leads a session of its own, at
nice 19 for its autogroup and SCHED_IDLE (proc.background.make_idle), so it takes only the
CPU time others leave: a shorter GET / tail under certificate load, for the server and for
other processes beside it, than key threads of the server gave (measured:
docs/DESIGN-NOTES.md#key-generation-in-a-child-process).

Protocol, on the child's stdin and stdout:
- the server writes one byte per key it wants;
- the child's generator threads answer each with one frame: kind (1 byte, `K` a key, `E` an
  error), payload length (4 bytes, big-endian), payload. A key's payload is the key's length
  (4 bytes), the PKCS#8 DER key, then the JSON body of its default certificate.
The child exits at EOF on stdin (the server closed it, or died) and, by PR_SET_PDEATHSIG,
with its parent. A key crosses only this pipe: never a file, never a log.

When asked (`tick` above 0: PHOENIX_CERT_TICK_MS) and while it generates keys on every CPU,
the child also runs a scheduling tick of its own (certs/schedtick.py), so that a request the
kernel puts behind a key thread waits at most about `tick` seconds instead of a kernel tick.

Run as `python -m cloud_phoenix.certs.keymaker THREADS PARENT_PID TICK_MICROSECONDS` by
`KeyMaker`; nothing here imports a web framework, so the child starts quickly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import struct
import sys
import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import replace
from typing import BinaryIO

from cloud_phoenix import exitcodes
from cloud_phoenix.certs.keys import SpareKey, make_spare_parts
from cloud_phoenix.certs.schedtick import SchedulingTick, ticking_cpus
from cloud_phoenix.proc.background import die_with_parent, make_idle
from cloud_phoenix.proc.backoff import RESTART

log = logging.getLogger(__name__)

HEAD = struct.Struct("!cI")  # kind, payload length
KEY_LENGTH = struct.Struct("!I")
KIND_KEY = b"K"
KIND_ERROR = b"E"
MAX_FRAME = 1 << 20  # a key frame is about 4 KiB: anything larger is a broken child
# After an exit of the child: the supervisor's restart backoff, bounded lower, while it dies
# again before handing out a key (a broken install must not be restarted in a hot loop).
RESTART_BACKOFF = replace(RESTART, max_delay=5.0)


class KeyMakerError(Exception):
    """The key maker could not make a key: its child failed, exited or could not start."""


class KeyMaker:
    """The server's side: `await make()` is one new spare key from the child.

    The child is started on the first request (a worker that never serves a certificate
    never starts one) with `threads` generator threads; a caller should keep at most
    `threads` requests outstanding (KeyPool's concurrency). If the child exits, the requests
    it had fail with KeyMakerError and the next request starts a new one. `tick`: the period
    of the child's own scheduling tick in seconds (0, the default: none).
    """

    def __init__(self, threads: int, tick: float = 0.0, python: str = sys.executable) -> None:
        self.threads = threads
        self.tick = tick
        self.python = python
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: deque[asyncio.Future[SpareKey]] = deque()
        self._starting = asyncio.Lock()
        self._failures = 0  # exits in a row without a key handed out
        self._not_before = 0.0  # monotonic time before which no new child is started
        self._closed = False

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def make(self) -> SpareKey:
        if self._closed:
            raise KeyMakerError("the key maker is closed")
        process = await self._running()
        future: asyncio.Future[SpareKey] = asyncio.get_running_loop().create_future()
        self._pending.append(future)
        assert process.stdin is not None
        try:
            process.stdin.write(b"k")
        except (ConnectionError, RuntimeError) as exc:  # the child is going: its reader
            self._pending.remove(future)  # fails what it had; this one fails here
            raise KeyMakerError(f"the key generator process is gone: {exc}") from exc
        return await future

    async def close(self) -> None:
        """Stop the child (it holds nothing worth waiting for) and fail what is pending."""
        self._closed = True
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self._fail_pending(KeyMakerError("the key maker is closed"))

    async def _running(self) -> asyncio.subprocess.Process:
        async with self._starting:
            process = self._process
            if process is not None and process.returncode is None:
                return process
            if self._reader is not None:  # the last child's exit is not handled yet
                await asyncio.gather(self._reader, return_exceptions=True)
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._closed:
                raise KeyMakerError("the key maker is closed")
            try:
                process = await asyncio.create_subprocess_exec(
                    self.python,
                    "-m",
                    "cloud_phoenix.certs.keymaker",
                    str(self.threads),
                    str(os.getpid()),
                    str(round(self.tick * 1e6)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    start_new_session=True,  # its own session: see the module docstring
                )
            except OSError as exc:
                self._exited(f"could not start: {exc}")
                raise KeyMakerError(f"cannot start the key generator process: {exc}") from exc
            self.starts += 1
            self._process = process
            self._reader = asyncio.create_task(self._read(process))
            log.info("key generator started (pid %d, %d threads)", process.pid, self.threads)
            return process

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        reason = "closed its output"
        try:
            while True:
                kind, length = HEAD.unpack(await process.stdout.readexactly(HEAD.size))
                if length > MAX_FRAME:
                    reason = f"sent a frame of {length} bytes"
                    process.kill()
                    break
                payload = await process.stdout.readexactly(length)
                try:
                    self._deliver(kind, payload)
                except (ValueError, TypeError, struct.error) as exc:
                    reason = f"sent a malformed frame ({exc})"
                    process.kill()
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            code = await process.wait()
            if self._process is process:
                self._process = None
            if not self._closed:
                self._exited(f"{reason}, exit code {code}")

    def _deliver(self, kind: bytes, payload: bytes) -> None:
        result: SpareKey | KeyMakerError
        if kind == KIND_KEY:
            (key_length,) = KEY_LENGTH.unpack_from(payload)
            start = KEY_LENGTH.size
            key_der = payload[start : start + key_length]
            result = SpareKey.from_parts(key_der, payload[start + key_length :], time.monotonic())
            self._failures = 0
        else:
            result = KeyMakerError(payload.decode(errors="replace"))
        while self._pending:
            future = self._pending.popleft()
            if future.done():  # its caller gave up (stopped); the key is dropped with it
                continue
            if isinstance(result, KeyMakerError):
                future.set_exception(result)
            else:
                future.set_result(result)
            return

    def _exited(self, reason: str) -> None:
        delay = RESTART_BACKOFF.delay(self._failures)
        self._failures += 1
        self._not_before = time.monotonic() + delay
        pending = sum(1 for f in self._pending if not f.done())
        log.error(
            "key generator %s; %d key requests fail, the next starts it again%s",
            reason,
            pending,
            f" in {delay:.2f} s at the earliest" if delay else "",
        )
        self._fail_pending(KeyMakerError(f"the key generator process {reason}"))

    def _fail_pending(self, error: KeyMakerError) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)


# --- the child ---------------------------------------------------------------------------


def key_frame(key_der: bytes, ready_json: bytes) -> bytes:
    payload = KEY_LENGTH.pack(len(key_der)) + key_der + ready_json
    return HEAD.pack(KIND_KEY, len(payload)) + payload


def error_frame(message: str) -> bytes:
    payload = message.encode()
    return HEAD.pack(KIND_ERROR, len(payload)) + payload


def serve_tickets(
    threads: int, tickets_fd: int, frames_out: BinaryIO, tick: SchedulingTick | None
) -> None:
    """The child's work: one key (or error) frame per byte read from `tickets_fd`, made by
    `threads` threads, until EOF; `tick` runs while a key is being made."""
    tickets: queue.SimpleQueue[bool] = queue.SimpleQueue()
    write_lock = threading.Lock()
    working = tick.busy if tick is not None else nullcontext

    def generate() -> None:
        while tickets.get():
            try:
                with working():
                    frame = key_frame(*make_spare_parts())
            except Exception as exc:  # reported to the server, which fails that request
                frame = error_frame(f"key generation failed: {type(exc).__name__}: {exc}")
            with write_lock:
                try:
                    frames_out.write(frame)
                    frames_out.flush()
                except OSError:  # the server is gone: nobody wants keys any more
                    os._exit(0)

    workers = [threading.Thread(target=generate, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    while chunk := os.read(tickets_fd, 4096):
        for _ in range(len(chunk)):
            tickets.put(True)
    for _ in workers:
        tickets.put(False)


def report(problem: str) -> None:
    sys.stderr.write(f"key generator: {problem}\n")


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not all(arg.isdigit() for arg in argv):
        sys.stderr.write(
            "usage: python -m cloud_phoenix.certs.keymaker THREADS PARENT_PID TICK_MICROSECONDS\n"
        )
        return exitcodes.USAGE
    threads, parent, tick_us = max(1, int(argv[0])), int(argv[1]), int(argv[2])
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above took effect
        return 0
    # The tick's threads start at normal priority, before the process is made idle: leaving
    # SCHED_IDLE for SCHED_FIFO takes CAP_SYS_NICE, leaving SCHED_OTHER only an RLIMIT_RTPRIO
    # of 1 (systemd's LimitRTPRIO=1, docker's --ulimit rtprio=1).
    tick = None
    cpus = ticking_cpus(threads) if tick_us else []
    if cpus:
        tick = SchedulingTick(tick_us / 1e6, cpus, report)
        tick.start()
    # Before the key threads start: threads inherit the scheduling policy of the one that
    # starts them (make_idle sets this, the main, thread's).
    for problem in make_idle(os.getpid()):
        report(f"CPU priority not fully lowered: {problem}")
    serve_tickets(threads, sys.stdin.fileno(), sys.stdout.buffer, tick)
    # EOF: the server stopped asking. The keys being made are nobody's: do not wait for them.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
