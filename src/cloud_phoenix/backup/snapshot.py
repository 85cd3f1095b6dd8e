"""Database snapshots and restores, one module per backend, picked by the URL's scheme.

Every backend offers the same four functions:

- `dump_format(url)`: the dump format it will write (it names the file);
- `dump(url, final, progress)`: a consistent snapshot of the serving database written to
  `files.temp_path(final)` (0600, fsynced), with the counts found *in the snapshot*;
- `restore(dump, url, manifest, progress)`: check the dump's content against the manifest,
  then load it into `url`; nothing is changed if the check fails;
- `scratch(url, folder)`: a context manager giving an empty throw-away database beside the
  source (for `--verify`), removed afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

from cloud_phoenix import exitcodes
from cloud_phoenix.backup.errors import BackupError
from cloud_phoenix.backup.manifest import Manifest
from cloud_phoenix.store.urls import redact_url, url_backend, url_database, url_problem

# progress(stage, done, total): total 0 means "unknown" (show a spinner, not a bar).
Progress = Callable[[str, int, int], None]


def no_progress(_stage: str, _done: int, _total: int) -> None:
    """The default progress callback: report nothing."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a dump holds: counts read inside the snapshot itself, the tool that made it, and
    for a gzip dump the bytes it expands to."""

    format: str
    records: int
    events: int
    positions: dict[str, int] = field(default_factory=dict)
    tool: str = ""
    expanded: int | None = None


@dataclass(frozen=True, slots=True)
class Restored:
    """Counts read back from the target after a restore."""

    records: int
    events: int


class Backend(Protocol):
    """The functions each backend module defines."""

    def dump_format(self, url: str) -> str: ...

    def dump(self, url: str, final: Path, progress: Progress) -> Snapshot: ...

    def restore(self, dump: Path, url: str, manifest: Manifest, progress: Progress) -> Restored: ...

    def scratch(self, url: str, folder: Path) -> AbstractContextManager[str]: ...


def backend_name(url: str) -> str:
    """sqlite, postgresql or mongodb, from the URL's scheme; BackupError (usage) for another
    scheme, or for a URL whose password the drivers could read differently."""
    problem = url_problem(url)
    if problem:
        raise BackupError(f"the database URL is refused: {problem}", exitcodes.USAGE)
    try:
        return url_backend(url)
    except ValueError as exc:
        raise BackupError(str(exc), exitcodes.USAGE) from None


def source_name(url: str) -> str:
    """The database as the manifest and messages name it: never user nor password."""
    name = backend_name(url)
    if name == "sqlite":
        return url.split("?", 1)[0]  # a file path holds no secret
    database = url_database(url)  # as the driver reads it, like the servers
    return f"{redact_url(url)}/{database}" if database else redact_url(url)


def backend_for(url: str) -> Backend:
    """The module that snapshots and restores databases of `url`'s kind."""
    # Imported on demand: a SQLite installation never loads psycopg or pymongo for this.
    module: ModuleType
    name = backend_name(url)
    if name == "sqlite":
        from cloud_phoenix.backup import sqlite as module
    elif name == "postgresql":
        from cloud_phoenix.backup import postgres as module
    else:
        from cloud_phoenix.backup import mongodb as module
    return cast(Backend, module)


def lines(stream: Iterator[bytes]) -> Iterator[str]:
    """Decoded lines of a tool's output, without line ends."""
    for raw in stream:
        yield raw.decode(errors="replace").rstrip("\r\n")
