"""The key maker: a real child process making real RSA keys, and what happens when it fails.

Tried here: a child killed with -9 while a key is being made, a child that cannot start
(exits at once), a child that sends a malformed or oversized frame, a closed maker, the
child's own command line used wrongly, and a child whose parent is already gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from cloud_phoenix import exitcodes
from cloud_phoenix.certs.keymaker import HEAD, KIND_KEY, KeyMaker, KeyMakerError
from cloud_phoenix.certs.schedtick import ticking_cpus
from cloud_phoenix.config import Settings
from tests.fixtures.waiting import eventually, eventually_async

pytestmark = pytest.mark.integration


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 60))


def autogroup_nice(pid: int) -> int | None:
    """The nice value of the autogroup of `pid` (None where the kernel has no autogroups)."""
    try:
        text = Path(f"/proc/{pid}/autogroup").read_text()  # "/autogroup-123 nice 19"
    except FileNotFoundError:
        return None
    return int(text.split("nice")[1])


def test_keys_come_from_one_child_at_idle_priority_in_its_own_session() -> None:
    async def scenario() -> None:
        maker = KeyMaker(2)
        try:
            spares = await asyncio.gather(*(maker.make() for _ in range(3)))
            pid = maker.pid
            assert pid is not None and maker.starts == 1
            assert os.getsid(pid) == pid  # a session of its own
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
            assert autogroup_nice(pid) in (19, None)  # None: a kernel without autogroups
            numbers = {spare.private_key().private_numbers().d for spare in spares}
            assert len(numbers) == 3  # every key handed out once
            for spare in spares:
                cert = x509.load_pem_x509_certificate(spare.ready.cert.encode())
                public = spare.private_key().public_key().public_numbers()
                assert cert.public_key().public_numbers() == public  # type: ignore[union-attr]
        finally:
            await maker.close()
        assert maker.pid is None
        with pytest.raises(KeyMakerError, match="closed"):
            await maker.make()

    run(scenario())


def test_a_killed_child_fails_its_request_and_the_next_one_starts_a_new_child() -> None:
    async def scenario() -> None:
        maker = KeyMaker(1)
        try:
            await maker.make()
            first = maker.pid
            assert first is not None
            pending = asyncio.ensure_future(maker.make())
            await eventually_async(lambda: maker._pending, what="the request in the child's hands")
            os.kill(first, signal.SIGKILL)
            with pytest.raises(KeyMakerError, match="exit code -9"):
                await pending
            await maker.make()  # a new child, at once (the first failure has no delay)
            assert maker.starts == 2 and maker.pid not in (None, first)
        finally:
            await maker.close()
        assert not Path(f"/proc/{first}").exists()

    run(scenario())


def test_a_child_that_cannot_start_is_a_clear_error_and_is_not_restarted_in_a_hot_loop(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        maker = KeyMaker(1, python="/bin/false")  # exits 1 whatever it is asked
        started = time.monotonic()
        for _ in range(4):
            with pytest.raises(KeyMakerError, match="exit code 1"):
                await maker.make()
        # Restarts after the first wait 0.25, 0.5 s: not a busy loop.
        assert time.monotonic() - started >= 0.7
        await maker.close()

        missing = KeyMaker(1, python=str(tmp_path / "no-such-python"))
        with pytest.raises(KeyMakerError, match="cannot start the key generator"):
            await missing.make()
        await missing.close()

    run(scenario())


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (HEAD.pack(KIND_KEY, 2) + b"xx", "malformed frame"),  # too short for its key length
        (HEAD.pack(KIND_KEY, 1 << 30), "frame of 1073741824 bytes"),
    ],
)
def test_a_child_sending_garbage_is_stopped_and_its_request_fails(
    tmp_path: Path, frame: bytes, reason: str
) -> None:
    liar = tmp_path / "liar"
    octal = "".join(f"\\{byte:03o}" for byte in frame)  # printf's escapes, byte by byte
    liar.write_text(
        "#!/bin/sh\n"
        "head -c 1 >/dev/null\n"  # wait for the request
        f"printf '{octal}'\n"
        # exec: no grandchild holding the pipe open after the maker kills the liar (asyncio
        # waits for the pipes too).
        "exec sleep 30\n"
    )
    liar.chmod(0o755)

    async def scenario() -> None:
        maker = KeyMaker(1, python=str(liar))
        try:
            with pytest.raises(KeyMakerError, match=reason):
                await maker.make()
        finally:
            await maker.close()

    run(scenario())


def child(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_phoenix.certs.keymaker", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_child_answers_each_byte_with_a_key_and_exits_at_end_of_input() -> None:
    process = child("2", str(os.getpid()), "0")
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"kk")
    process.stdin.flush()
    for _ in range(2):
        kind, length = HEAD.unpack(process.stdout.read(HEAD.size))
        assert kind == KIND_KEY and len(process.stdout.read(length)) == length
    process.stdin.close()
    assert process.wait(10) == 0


def test_the_child_refuses_a_wrong_command_line_and_a_parent_already_gone() -> None:
    wrong = child("two")
    _, err = wrong.communicate(timeout=10)
    assert wrong.returncode == exitcodes.USAGE and b"usage" in err
    orphan = child("1", "1", "0")  # "its parent is pid 1": as if the server died before prctl
    orphan.stdin.write(b"k")  # type: ignore[union-attr]
    out, _ = orphan.communicate(timeout=10)
    assert orphan.returncode == 0 and out == b""  # made no key for nobody


# --- the scheduling tick (certs/schedtick.py) ---------------------------------------------------

CPUS = sorted(os.sched_getaffinity(0))
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="real-time priority needs root (CAP_SYS_NICE) here"
)


def tick_threads(pid: int) -> dict[int, tuple[set[int], int]]:
    """The SCHED_FIFO threads of `pid`: thread id -> (CPUs it may run on, voluntary context
    switches so far; a tick thread makes one per wake-up)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            if os.sched_getscheduler(tid) != os.SCHED_FIFO:
                continue
            assert os.sched_getparam(tid).sched_priority == 1  # the lowest real-time priority
            status = (task / "status").read_text()
            affinity = os.sched_getaffinity(tid)
        except (ProcessLookupError, FileNotFoundError):  # a thread that ended meanwhile
            continue
        switches = int(status.split("voluntary_ctxt_switches:")[1].split()[0])
        found[tid] = (affinity, switches)
    return found


def wake_ups(pids: list[int], seconds: float) -> list[dict[int, int]]:
    """For each of `pids`, per CPU, how often its tick thread for that CPU woke up in the
    next `seconds` (all measured over the same time)."""
    before = [tick_threads(pid) for pid in pids]
    time.sleep(seconds)  # the span measured, on purpose
    after = [tick_threads(pid) for pid in pids]
    return [
        {min(cpus): now[tid][1] - switches for tid, (cpus, switches) in then.items()}
        for then, now in zip(before, after, strict=True)
    ]


def ticking(*pids: int) -> list[int]:
    """The CPUs that a tick thread of one of `pids` ticks now (at 1 ms, 20 wake-ups in 20 ms;
    a thread that waits for a claim wakes every 0.1 s, an idle one not at all)."""
    return sorted({cpu for t in wake_ups(list(pids), 0.02) for cpu, n in t.items() if n >= 5})


class Busy:
    """A key maker child with `keys` tickets, its output drained by a thread so that it
    never blocks on a full pipe."""

    def __init__(self, keys: int, tick_us: int = 1000, *prefix: str) -> None:
        self.keys = keys
        arguments = [str(len(CPUS)), str(os.getpid()), str(tick_us)]
        self.process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "cloud_phoenix.certs.keymaker", *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # as KeyMaker starts it
        )
        self.made = 0
        self._drain = threading.Thread(target=self._read)

    def _read(self) -> None:
        out = self.process.stdout
        assert out is not None
        while self.made < self.keys and len(head := out.read(HEAD.size)) == HEAD.size:
            kind, length = HEAD.unpack(head)
            assert kind == KIND_KEY and len(out.read(length)) == length
            self.made += 1

    def start(self) -> Busy:
        self._drain.start()
        assert self.process.stdin is not None
        self.process.stdin.write(b"k" * self.keys)
        self.process.stdin.flush()
        return self

    def drained(self, timeout: float) -> None:
        self._drain.join(timeout)
        assert self.made == self.keys

    def kill(self) -> None:
        """kill -9 the child and collect what is left of it."""
        self.process.kill()
        self._drain.join(10)
        self.process.communicate(timeout=10)

    def finish(self) -> str:
        """Wait for every key, end the child; its standard error."""
        self.drained(60)
        _, err = self.process.communicate(timeout=10)
        assert self.process.returncode == 0
        return err.decode()


# What drops CAP_SYS_NICE from a root process: it is then as unprivileged as any user for
# its scheduling policy (RLIMIT_RTPRIO is 0 by default).
NO_SYS_NICE = ("setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice")


def rtprio_can_be_raised() -> bool:
    command = ["prlimit", "--rtprio=1", "true"]
    return subprocess.run(command, check=False, capture_output=True).returncode == 0


@needs_root
@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param((), id="root"),
        # What systemd's LimitRTPRIO=1 or docker's --ulimit rtprio=1 give a non-root service.
        pytest.param(
            ("prlimit", "--rtprio=1", *NO_SYS_NICE),
            id="unprivileged-rtprio-1",
            marks=pytest.mark.skipif(
                not rtprio_can_be_raised(),
                reason="RLIMIT_RTPRIO cannot be raised here (no CAP_SYS_RESOURCE)",
            ),
        ),
    ],
)
def test_the_child_ticks_every_cpu_at_real_time_priority_only_while_it_makes_keys(
    prefix: tuple[str, ...],
) -> None:
    busy = Busy(25 * len(CPUS), 1000, *prefix).start()  # about a second of keys per CPU
    try:
        eventually(lambda: ticking(busy.process.pid) == CPUS, what="a tick on every CPU")
        (ticks,) = wake_ups([busy.process.pid], 0.3)
        assert sorted(ticks) == CPUS  # one tick thread per CPU, pinned to it
        assert all(count >= 100 for count in ticks.values()), ticks  # ~280 at 1 ms
        busy.drained(60)  # every key made: idle now
        eventually(lambda: ticking(busy.process.pid) == [], what="no tick once idle")
        (idle,) = wake_ups([busy.process.pid], 0.3)
        assert all(count <= 2 for count in idle.values()), idle
    finally:
        err = busy.finish()
    assert "tick" not in err


@needs_root
def test_one_tick_per_cpu_for_the_whole_host_however_many_key_makers() -> None:
    makers = [Busy(25 * len(CPUS)).start() for _ in range(2)]
    try:
        pids = [maker.process.pid for maker in makers]
        eventually(lambda: ticking(*pids) == CPUS, what="a tick on every CPU")
        ticks = wake_ups([maker.process.pid for maker in makers], 0.3)
    finally:
        for maker in makers:
            maker.finish()
    for cpu in CPUS:
        together = sum(counts.get(cpu, 0) for counts in ticks)
        # One tick thread wakes at most 300 times in 0.3 s at 1 ms; two would be ~560. The
        # one without the claim looks at it every 0.1 s.
        assert 100 <= together <= 320, (cpu, ticks)


@needs_root
def test_a_key_maker_killed_while_it_ticks_leaves_its_cpus_to_the_next() -> None:
    first = Busy(25 * len(CPUS)).start()
    eventually(lambda: ticking(first.process.pid) == CPUS, what="the first holding every claim")
    second = Busy(25 * len(CPUS)).start()
    try:
        eventually(  # its tick threads look at the claims every 0.1 s
            lambda: len(tick_threads(second.process.pid)) == len(CPUS), what="second's threads"
        )
        first.kill()  # kill -9: no chance to let go of its claims itself
        eventually(lambda: ticking(second.process.pid) == CPUS, what="the second taking over")
        (ticks,) = wake_ups([second.process.pid], 0.3)
        assert sorted(ticks) == CPUS
        assert all(count >= 100 for count in ticks.values()), ticks
    finally:
        first.kill()
        second.finish()


@needs_root
def test_without_real_time_priority_the_child_says_so_once_and_makes_keys() -> None:
    busy = Busy(2 * len(CPUS), 1000, *NO_SYS_NICE)
    busy.start()
    eventually(lambda: busy.made, what="a key made: a tick would have started")
    assert tick_threads(busy.process.pid) == {}
    err = busy.finish()
    assert err.count("no scheduling tick of its own") == 1, err
    assert "CAP_SYS_NICE" in err


def test_no_tick_when_a_cpu_stays_free_of_key_threads_or_when_it_is_off() -> None:
    assert ticking_cpus(len(CPUS)) == CPUS
    if len(CPUS) > 1:
        assert ticking_cpus(len(CPUS) - 1) == []
    busy = Busy(2 * len(CPUS), 0).start()  # tick period 0: off
    eventually(lambda: busy.made, what="a key made: a tick would have started")
    assert tick_threads(busy.process.pid) == {}
    assert busy.finish() == ""


@needs_root
def test_a_key_maker_with_the_default_settings_runs_no_real_time_thread() -> None:
    async def scenario() -> None:
        maker = KeyMaker(len(CPUS), Settings.from_env({}).cert_tick)  # as create_app builds it
        try:
            await asyncio.gather(*(maker.make() for _ in range(len(CPUS))))
            assert maker.pid is not None
            assert tick_threads(maker.pid) == {}  # a tick's threads exist from the child's start
        finally:
            await maker.close()

    run(scenario())
