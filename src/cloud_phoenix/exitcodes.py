"""Every exit code, by its name in sysexits.h: "cannot start" is distinct, so a supervisor
stops instead of restarting in a loop."""

from __future__ import annotations

OK = 0
NOT_RUNNING = 3  # `phoenix status`: no stack runs here (like `systemctl status`)
USAGE = 64  # the request itself cannot work (an option missing, a dump into the wrong database)
DATAERR = 65  # a backup is corrupt, truncated, or disagrees with its manifest
NOINPUT = 66  # the backup named does not exist
UNAVAILABLE = 69  # a program or service the command needs is missing or down
SOFTWARE = 70  # a child failed in a way a restart cannot mend (gunicorn cannot load the app)
CANTCREAT = 73  # PHOENIX_HOME or a file in it cannot be written
TEMPFAIL = 75  # try again later: the port is taken, another backup runs
CONFIG = 78  # invalid configuration


class CannotStart(Exception):
    """The command cannot start; `code` is its exit code, the message says what to do."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
