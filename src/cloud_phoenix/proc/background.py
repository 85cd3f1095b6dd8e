"""Background child processes: idle CPU priority that holds against other sessions too,
death with the parent, and a start that a stop cannot cut short.

SCHED_IDLE yields the CPU at once, but only to tasks of the same scheduling group. Where the
kernel groups processes by session (autogroups: on by default, for processes not put in a
cgroup of their own), a SCHED_IDLE process of one session competes with every other
session's processes at full weight: SCHED_IDLE key generation in another session made a
bare app's GET / tail several times longer, and no longer once that session's autogroup was
at nice 19 (measured: docs/DESIGN-NOTES.md#idle-priority-that-holds-against-other-sessions).
So a background process runs in a session of its own, with that session's autogroup at
nice 19, and at SCHED_IDLE.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

AUTOGROUP_NICE = 19  # the lowest: the autogroup's weight is 15 against a normal one's 1024
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})

# Resolved once at import: a child that calls die_with_parent between fork and exec runs
# nothing but the prctl call itself.
_LIBC = ctypes.CDLL(None, use_errno=True)


def make_idle(pid: int) -> list[str]:
    """SCHED_IDLE for process `pid` (its main thread, and the threads it starts later) and,
    if it leads its own session, nice 19 for the session's autogroup.

    Returns what could not be applied, each with its reason (empty: everything applied).
    A kernel without autogroups needs only SCHED_IDLE, and that is not a problem.
    """
    problems: list[str] = []
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox refuses it
        problems.append(f"SCHED_IDLE refused: {exc}")
    try:
        leads_session = os.getsid(pid) == pid
    except OSError as exc:
        return [*problems, f"session of pid {pid} unknown: {exc}"]
    if not leads_session:
        # Its autogroup is its parent's session's: lowering it would lower the parent too.
        return [*problems, f"pid {pid} does not lead a session: its autogroup is left alone"]
    try:
        Path(f"/proc/{pid}/autogroup").write_text(f"{AUTOGROUP_NICE}\n")
    except FileNotFoundError:
        pass  # no autogroups in this kernel: sessions share one group, SCHED_IDLE suffices
    except OSError as exc:
        problems.append(f"autogroup nice refused: {exc}")
    return problems


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent thread exits (Linux
    PR_SET_PDEATHSIG), so that no child outlives the process that relies on it."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


@contextmanager
def stops_held() -> Iterator[None]:
    """SIGTERM and SIGINT blocked in the calling thread meanwhile. A child spawned here
    inherits the mask across fork and exec, so a stop that comes while it is still importing
    waits for its handlers (`release_stops`) instead of killing it before its last pass."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def release_stops() -> None:
    """In a child started under `stops_held`, once its handlers are in place: a stop held
    since its start reaches them now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
