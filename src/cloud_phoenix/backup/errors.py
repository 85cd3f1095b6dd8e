"""What can go wrong with a backup or a restore, each with the exit code the CLI gives it.

Library code raises these; `cli.backup` turns them into a message and `exc.code`.
"""

from __future__ import annotations

from cloud_phoenix import exitcodes

USAGE = 64  # EX_USAGE: the request itself cannot work (a PostgreSQL dump into a SQLite URL)
DATAERR = 65  # EX_DATAERR: a backup file is corrupt, truncated, or disagrees with its manifest
NOINPUT = 66  # EX_NOINPUT: the backup file named does not exist
BUSY = 75  # EX_TEMPFAIL: another backup holds the lock; try again later

# The end of every refusal that comes before a restore touches its target.
NOTHING_CHANGED = "nothing was changed"


class BackupError(Exception):
    """A backup or restore failed; the message says what and what to do, `code` the exit code."""

    code = exitcodes.SOFTWARE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class SourceUnavailable(BackupError):
    """The database is down or a tool it needs (pg_dump, pg_restore) is missing."""

    code = exitcodes.UNAVAILABLE


class CannotWrite(BackupError):
    """The backups folder (or a restore target) cannot be written: missing, read-only, full."""

    code = exitcodes.CANT_CREATE


class BadBackup(BackupError):
    """A backup is corrupt, truncated or mismatched; nothing was changed."""

    code = DATAERR


class UnsafeManifest(BadBackup):
    """A manifest names a file that is not its backup's own (a path, another backup's file,
    a link): refused before that file is opened or even looked at."""


class BackupBusy(BackupError):
    """Another backup runs in this backups folder now."""

    code = BUSY
