"""Exit codes (sysexits.h): "cannot start" is distinct, so a supervisor stops instead of
restarting in a loop."""

from __future__ import annotations

OK = 0
SOFTWARE = 70  # a child failed in a way a restart cannot mend (gunicorn cannot load the app)
UNAVAILABLE = 69  # a program or service the command needs is missing or down
CANT_CREATE = 73  # PHOENIX_HOME or a file in it cannot be written
PORT_TAKEN = 75
CONFIG = 78  # invalid configuration
NOT_RUNNING = 3  # `phoenix status`: no stack runs here (like `systemctl status`)


class CannotStart(Exception):
    """The command cannot start; `code` is its exit code, the message says what to do."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
