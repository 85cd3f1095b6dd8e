"""Dead processes' Prometheus files folded into one archive per metric type, so that the
multi-process folder holds the live processes' files plus a constant, and a scrape reads that many.

prometheus_client gives each process its own files (`counter_PID.db`, `histogram_PID.db`) and a
scrape sums every file in the folder. Nothing removes a dead process's counters, so each
`/crash` left two more files for every later scrape to read. The gunicorn master, when a worker
has exited, adds the values of every process that is gone to `counter_archive.db` and
`histogram_archive.db` (prometheus_client's own file format: its MultiProcessCollector sums them
like any process's file) and deletes the dead files. Gauges are not folded: their live/dead
modes stay prometheus_client's.

Why a lock: the collector lists the folder, then reads the files one by one. A scrape that read
the new archive and then the dead files, not yet deleted, would count them twice and the next
scrape once: a counter that goes down. One that listed a file deleted since would fail. So a
fold holds an exclusive flock on `fold.lock` and a scrape a shared one: a scrape reads the
folder as it was before a fold or after it, never in between.

Why a note: a fold replaces up to two archives and deletes files, which no single rename does.
It writes the new archives under temporary names, then `fold.json`, which names them and the
files they hold (the commit), then renames and deletes. Whoever takes the lock next, fold or
scrape, finishes a noted fold first, so a master killed midway never leaves a file counted twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

FOLDED_TYPES = ("counter", "histogram", "summary")  # the types whose values only add up
ARCHIVE = "archive"  # in place of a pid: `counter_archive.db`
LOCK = "fold.lock"
NOTE = "fold.json"
TMP = ".tmp"  # not `.db`: the collector never reads a file being written
FOLD_WAIT = 1.0  # seconds the master waits for scrapes to end; else the next exit folds
SCRAPE_WAIT = 5.0  # seconds a scrape waits for a fold (which takes milliseconds)


def fold_dead(directory: Path, wait: float = FOLD_WAIT) -> int:
    """Fold the counters and histograms of every process that is gone into the archives and
    delete their files. Returns how many files were folded: 0 too when scrapes held the
    folder for `wait` seconds, and the next fold takes them."""
    with _locked(directory, fcntl.LOCK_EX, wait) as held:
        if not held:
            log.warning("metrics fold: scrapes held %s for %.1f s; folding later", directory, wait)
            return 0
        _finish(directory)
        folded = _commit(directory)
        _finish(directory)
        return folded


@contextmanager
def consistent_view(directory: Path, wait: float = SCRAPE_WAIT) -> Iterator[None]:
    """Keep folds out of `directory` while the block reads it (many readers at once).
    Raises TimeoutError if a fold holds it for `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        with _locked(directory, fcntl.LOCK_SH, deadline - time.monotonic()) as held:
            if not held:
                raise TimeoutError(f"a metrics fold has held {directory} for {wait:g} s")
            if not (directory / NOTE).exists():
                yield
                return
        # A master died within a fold: finish it, then read.
        with _locked(directory, fcntl.LOCK_EX, deadline - time.monotonic()) as held:
            if held:
                _finish(directory)


def collect(directory: Path, wait: float = SCRAPE_WAIT) -> list[Metric]:
    """Every process's figures in `directory`, summed by prometheus_client, read while no fold
    runs. A file still empty is skipped: its process was born a moment ago and has counted
    nothing yet (prometheus_client's own collector fails on it)."""
    with consistent_view(directory, wait):
        files = [str(path) for path in directory.glob("*.db") if _size(path) > 0]
        return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]


def _commit(directory: Path) -> int:
    """Write the archives with the dead files' values under temporary names, then the note
    that commits them. The caller holds the lock exclusively."""
    dead: dict[str, list[str]] = {}
    for name in sorted(os.listdir(directory)):
        typ, _, pid = name.removesuffix(".db").rpartition("_")
        if name.endswith(".db") and typ in FOLDED_TYPES and pid.isdigit() and _gone(int(pid)):
            dead.setdefault(typ, []).append(name)
    replace: dict[str, str] = {}
    delete: list[str] = []
    for typ, names in dead.items():
        archive = f"{typ}_{ARCHIVE}.db"
        totals: dict[str, tuple[float, float]] = {}
        if (directory / archive).exists():
            _add(directory / archive, totals)
        for name in names:
            try:
                _add(directory / name, totals)
            except (RuntimeError, ValueError, OSError) as exc:  # the collector fails on it too
                log.warning("metrics fold: cannot read %s (%s); left in place", name, exc)
                continue
            delete.append(name)
        _write(directory / (archive + TMP), totals)
        replace[archive + TMP] = archive
    if not delete:
        return 0
    _write_atomically(directory / NOTE, json.dumps({"replace": replace, "delete": delete}))
    return len(delete)


def _finish(directory: Path) -> None:
    """Carry out a committed fold (idempotent), or drop what an uncommitted one wrote."""
    try:
        note = json.loads((directory / NOTE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        for stray in directory.glob("*" + TMP):
            stray.unlink(missing_ok=True)
        return
    for tmp, archive in note["replace"].items():
        with suppress(FileNotFoundError):  # replaced before the fold was interrupted
            os.replace(directory / Path(tmp).name, directory / Path(archive).name)
    for name in note["delete"]:
        (directory / Path(name).name).unlink(missing_ok=True)
    (directory / NOTE).unlink()


def _add(path: Path, totals: dict[str, tuple[float, float]]) -> None:
    """Add a file's values to `totals` (key -> value, newest timestamp)."""
    if path.stat().st_size < 8:  # created, never written: a process killed in its first write
        return
    for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(path)):  # type: ignore[no-untyped-call]
        old, stamp = totals.get(key, (0.0, 0.0))
        totals[key] = (old + value, max(stamp, timestamp))


def _write(path: Path, totals: dict[str, tuple[float, float]]) -> None:
    path.unlink(missing_ok=True)  # MmapedDict appends to what is there
    archive = MmapedDict(str(path))  # type: ignore[no-untyped-call]
    try:
        for key, (value, timestamp) in totals.items():
            archive.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        archive.close()  # type: ignore[no-untyped-call]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + TMP)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # a live gauge of a process marked dead just now
        return 0


def _gone(pid: int) -> bool:
    """True if no process has this pid: none can write its files any more. A zombie, not yet
    reaped, still counts as there."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process
        return False
    return False


@contextmanager
def _locked(directory: Path, operation: int, wait: float) -> Iterator[bool]:
    """Hold `fold.lock` (shared or exclusive); yields False if it was not had in `wait` s."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        deadline = time.monotonic() + wait
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, operation | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(delay)  # flock has no timeout of its own
                delay = min(delay * 2, 0.02)
        yield True
    finally:
        os.close(fd)  # releases the lock
