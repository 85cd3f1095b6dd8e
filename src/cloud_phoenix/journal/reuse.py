"""A journal file name used twice, and the file moved to a name of its own.

A file's name is its identity in the store: the position kept for `access-DAY.I.jsonl`
says how much of *that* file has been collected, and its records' keys carry the name. An
instance that takes another's name on the same UTC day (a task given a reused address, a
journal volume lost while the name was kept) starts a file the store believes read up to
the other's position: its first lines would be skipped, and their keys would collide with
the other file's records. A file that a crash cut short before the disk had its end, and
that was written on, is in the same place past the cut.

So the collector moves such a file to a name no file has had (`reissued_name`) and collects
it from its start, and leaves a link at the old name: a writer that opens the old name later
appends to the moved file, one that holds it open writes on into it whatever its name, and
the link is what /ready and /metrics report until the file is pruned.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import stat
from pathlib import Path

from cloud_phoenix.journal import FILE_RE, INSTANCE_MAX

log = logging.getLogger(__name__)

TOKEN_CHARS = 8  # hex digits of a reissued name's random part


def reissued_name(name: str, token: str | None = None) -> str:
    """`name` under an instance no file has had: the instance (cut to leave room), '-',
    and TOKEN_CHARS random hex digits; ValueError if `name` is no journal file name."""
    match = FILE_RE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a journal file name")
    day, instance = match.groups()
    token = token or secrets.token_hex(TOKEN_CHARS // 2)
    kept = (instance or "")[: INSTANCE_MAX - len(token) - 1]
    return f"access-{day}.{kept}-{token}.jsonl" if kept else f"access-{day}.{token}.jsonl"


def move_aside(directory: Path, name: str, new: str) -> bool:
    """Rename the journal file `name` to `new` and link `name` to it; False if `name` is no
    longer a file (another collector moved it first). Raises OSError if it cannot be moved.

    Durable before it returns (the folder is synced): a batch of `new` may commit next, and
    a power cut must not bring the old name back with the store already reading the new.
    """
    folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # two collectors of one journal: one moves it
        try:
            if not stat.S_ISREG(os.lstat(directory / name).st_mode):
                return False
        except FileNotFoundError:
            return False
        if os.path.lexists(directory / new):  # rename would replace it
            raise FileExistsError(f"{directory / new} exists")
        os.rename(directory / name, directory / new)
        try:
            os.symlink(new, directory / name)  # relative: the volume may be mounted elsewhere
        except OSError as exc:
            # A writer made the name again in between (its file is checked on the next
            # pass like any other), or this volume takes no links: only the report is lost.
            log.warning("journal: no link %s -> %s: %s", name, new, exc.strerror or exc)
        os.fsync(folder)
    finally:
        os.close(folder)
    return True


def moved_names(directory: Path) -> dict[str, str]:
    """The names moved aside whose file is still here: old name -> the file's name now."""
    moved: dict[str, str] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not (FILE_RE.match(entry.name) and entry.is_symlink()):
                    continue
                target = os.readlink(entry.path)
                if FILE_RE.match(target) and (directory / target).is_file():
                    moved[entry.name] = target
    except FileNotFoundError:
        return {}
    return dict(sorted(moved.items()))


def links(directory: Path) -> list[str]:
    """Every link among the journal's names, its file there or not (for pruning)."""
    try:
        with os.scandir(directory) as entries:
            return sorted(e.name for e in entries if FILE_RE.match(e.name) and e.is_symlink())
    except FileNotFoundError:
        return []
