"""The one place where the library's errors become a message on stderr and an exit code.

The library raises; every command runs inside `@edge`, which says what went wrong in one
line ("phoenix: ...") and exits with the sysexits code a service manager or a script can
act on: the error's own code (CannotStart, BackupError), 78 for invalid configuration or a
database URL that cannot be used, 65 for a run file it cannot read. What only a command
knows (no stack runs here, a refusal) it says through `fail`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.backup.errors import BackupError
from cloud_phoenix.config import ConfigError, Settings
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.logformat import configure
from cloud_phoenix.stack.runfiles import RunFileError
from cloud_phoenix.store.base import StoreError

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> typer.Exit:
    """Say `message` on stderr; raise what this returns to exit with `code`."""
    typer.secho(f"phoenix: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def edge(command: Callable[P, R]) -> Callable[P, R]:
    """`command`, with the library's errors turned into a message and an exit code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            raise fail(f"invalid configuration: {exc}", exitcodes.CONFIG) from None
        except (CannotStart, BackupError) as exc:
            raise fail(str(exc), exc.code) from None
        except StoreError as exc:  # the database URL cannot be used (a TLS file it names ...)
            raise fail(str(exc), exitcodes.CONFIG) from None
        except RunFileError as exc:  # the status or a deploy file: damaged, another version's
            raise fail(str(exc), exitcodes.DATAERR) from None

    return run


def load_settings() -> Settings:
    """The settings from the environment, the database URL checked as its driver will read
    it (a ConfigError reaches the edge)."""
    from cloud_phoenix.store.urls import check_database_url

    settings = Settings.from_env(os.environ)
    check_database_url(settings.db_url)
    return settings


def setup_logging(settings: Settings) -> None:
    """Log lines to stderr, where a service manager or a container runtime collects them:
    text, or one JSON object a line (PHOENIX_LOG_FORMAT=json)."""
    configure(settings.log_level, settings.log_format, sys.stderr)
