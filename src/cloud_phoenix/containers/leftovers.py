"""What an engine leaves on the host if its daemon cannot clean up: processes, cgroups and
mounts, found from the kernel's own tables (/proc, /sys/fs/cgroup) and removed by force."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_MNT_DETACH = 2


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of `pids` runs; returns those still running at the deadline."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if alive(pid)]
    return left


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (dockerd stops its containers and containerd), SIGKILL after `timeout`."""
    _signal(pid, signal.SIGTERM)
    if wait_gone([pid], timeout):
        log.warning("dockerd %d did not stop within %.0f s: killing it", pid, timeout)
        _signal(pid, signal.SIGKILL)
        wait_gone([pid], 10.0)


def kill_cgroup(name: str) -> None:
    """SIGKILL every process in the engine's cgroup parent (a container's init ignores
    SIGTERM), then remove its cgroups: under every v1 controller, or the one v2 tree."""
    # v1 names some controllers twice (cpu -> cpu,cpuacct): each tree once.
    roots = {p.resolve() for p in [CGROUP_ROOT / name, *CGROUP_ROOT.glob(f"*/{name}")]}
    for root in sorted(r for r in roots if r.is_dir()):
        groups = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for group in [*groups, root]:
            deadline = time.monotonic() + 10.0
            while pids := _cgroup_pids(group):
                for pid in pids:
                    _signal(pid, signal.SIGKILL)
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            try:
                group.rmdir()
            except OSError as exc:
                log.warning("cgroup %s not removed: %s", group, exc)


def _cgroup_pids(group: Path) -> list[int]:
    try:
        return [int(line) for line in (group / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def kill_mentioning(folder: Path) -> None:
    """SIGKILL every process whose command line names `folder` (containerd and its shims)."""
    needle = str(folder).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    for pid in pids:
        log.warning("killing process %d left by the engine in %s", pid, folder)
        _signal(pid, signal.SIGKILL)
    wait_gone(pids, 10.0)


def unmount_below(folder: Path) -> None:
    """Detach every mount at or under `folder`, deepest first (overlays, netns bind mounts)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for target in sorted(mounts_below(folder), key=lambda p: -len(p.parts)):
        if libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
            log.warning("cannot unmount %s: %s", target, os.strerror(ctypes.get_errno()))


def mounts_below(folder: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """The mount points at or under `folder`, from the kernel's mount table."""
    found = []
    for line in mountinfo.read_bytes().splitlines():
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        # The kernel writes space, tab, newline and backslash in octal (\040 ...).
        raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
        point = Path(os.fsdecode(raw))
        if point == folder or folder in point.parents:
            found.append(point)
    return found
