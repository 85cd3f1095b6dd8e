"""What a CPU notice names besides the figures: the stack's helper processes (a worker's key
maker, serve's collector) and the routes most requested during the peak.

Both read only what is cheap to read every second: a few /proc files of the stack's own
processes, and the tail of the journal.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from cloud_phoenix.journal import AccessRecord, file_name, format_time, journal_files

JOURNAL_TAIL_BYTES = 256 << 10

# The application's route table, by which a notice counts requests: a notice goes to Slack
# and e-mail, and must never carry text a client chose (a path such as "/x\nACTION
# REQUIRED: log in at ..."). The supervisor does not import the application (FastAPI, some
# 30 MB), so the paths are kept here; test_cpu_peaks keeps them equal to the app's routes.
ROUTES = frozenset(
    {
        "/",
        "/crash",
        "/generatecert",
        "/certRender",
        "/health",
        "/ready",
        "/metrics",
        "/logs",
        "/querylogs",
        "/checkdb",
        "/checkdbConn",
        "/ops",
        "/ops/data",
        "/openapi.json",
    }
)
MOUNTS = ("/static",)  # a mounted folder counts as one route, as in /metrics
UNMATCHED = "unmatched"  # any other path, as /metrics labels it


def helper_children(named: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Children of the named processes that are not named themselves, as
    ("<parent>: key maker", pid), ("<parent>: collector", pid) or ("<parent>: <program>", pid).

    Read from /proc/<pid>/task/<tid>/children: a few small files a second, not a walk of
    the whole process table."""
    parents = {pid: name for name, pid in named}
    found: list[tuple[str, int]] = []
    for pid, parent in parents.items():
        for child in _children_of(pid):
            if child not in parents:
                found.append((f"{parent}: {_role(child)}", child))
    return found


def _children_of(pid: int) -> list[int]:
    task_dir = Path(f"/proc/{pid}/task")
    try:
        threads = list(task_dir.iterdir())
    except OSError:  # gone, or not Linux
        return []
    children: list[int] = []
    for thread in threads:  # a child belongs to the thread that started it
        try:
            children += [int(child) for child in (thread / "children").read_text().split()]
        except OSError:
            continue
    return children


def _role(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    if b"cloud_phoenix.certs.keymaker" in args:
        return "key maker"
    if b"collect" in args and any(b"cloud_phoenix" in arg for arg in args):
        return "collector"
    return os.path.basename(args[0].decode(errors="replace")) or "?"


def route_label(path: str) -> str:
    """The route `path` belongs to: one of ROUTES or MOUNTS, or UNMATCHED."""
    if path in ROUTES:
        return path
    for mount in MOUNTS:
        if path.startswith(f"{mount}/"):
            return mount
    return UNMATCHED


def busiest_endpoints(
    journal_dir: Path, since_epoch: float, limit: int = 5
) -> tuple[tuple[str, int], ...]:
    """The `limit` routes (`route_label`) most requested since `since_epoch`, busiest first,
    from the journal.

    Reads only the last JOURNAL_TAIL_BYTES of the journal files from the day of `since_epoch`
    on (two at most, across midnight): a peak's requests are the newest lines.
    """
    since = format_time(datetime.fromtimestamp(since_epoch, UTC))
    first = file_name(datetime.fromtimestamp(since_epoch, UTC))
    counts: Counter[str] = Counter()
    for name in [n for n in journal_files(journal_dir) if n >= first][-2:]:
        for record in _tail_records(journal_dir / name):
            if record.time >= since:
                counts[route_label(record.path)] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(ranked[:limit])


def _tail_records(path: Path) -> Iterator[AccessRecord]:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            start = max(0, size - JOURNAL_TAIL_BYTES)
            handle.seek(start)
            data = handle.read(JOURNAL_TAIL_BYTES)
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    if start > 0:
        lines = lines[1:]  # begins mid-line
    for line in lines[:-1]:  # the last is empty or a line still being written
        try:
            yield AccessRecord.from_line(line)
        except ValueError:
            continue
