"""The CLI's one error edge: each error of the library becomes one line on stderr and its
exit code; `phoenix status` and `phoenix deploy` on a status file they cannot read say so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cloud_phoenix import exitcodes
from cloud_phoenix.backup import BadBackup, CannotWrite
from cloud_phoenix.cli import stack
from cloud_phoenix.cli.edge import edge
from cloud_phoenix.config import ConfigError
from cloud_phoenix.exitcodes import DATAERR, CannotStart
from cloud_phoenix.stack.status import StackStatus, StatusError, write_status
from cloud_phoenix.store import StoreError, StoreUnavailable


def app_raising(error: Exception) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @edge
    def fails() -> None:
        """A command whose library call raises."""
        raise error

    @app.command()
    def other() -> None:
        """A second command, so that `fails` is invoked by name."""

    return app


@pytest.mark.parametrize(
    ("error", "message", "code"),
    [
        (ConfigError("PORT must be 1-65535, got -1"), "invalid configuration: PORT", 78),
        (CannotStart("PORT 80 is taken: set PORT to a free port", 75), "PORT 80 is taken", 75),
        (CannotWrite("cannot write /backups"), "cannot write /backups", 73),
        (BadBackup("checksum mismatch; nothing was changed"), "checksum mismatch", DATAERR),
        (StoreError("tlsCAFile=/x does not exist"), "tlsCAFile=/x does not exist", 78),
        (StoreUnavailable("cannot connect"), "cannot connect", 78),
        (StatusError("status.json: port: Field required"), "status.json: port: Field", 65),
    ],
)
def test_a_library_error_becomes_a_message_and_its_exit_code(
    error: Exception, message: str, code: int
) -> None:
    outcome = CliRunner().invoke(app_raising(error), ["fails"])
    assert outcome.exit_code == code
    assert outcome.output.startswith(f"phoenix: {message}")
    assert outcome.output.count("\n") == 1 and "Traceback" not in outcome.output


def test_anything_else_is_a_bug_and_not_hidden() -> None:
    outcome = CliRunner().invoke(app_raising(KeyError("workers")), ["fails"])
    assert isinstance(outcome.exception, KeyError)


def stack_commands() -> typer.Typer:
    app = typer.Typer()
    app.command("status")(stack.status)
    app.command("deploy")(stack.deploy)
    return app


def test_status_on_a_damaged_status_file_says_which_field(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"supervisor_pid": "1", "port": 1}))
    for command in ("status", "deploy"):
        outcome = CliRunner().invoke(
            stack_commands(), [command], env={"PHOENIX_HOME": str(tmp_path)}
        )
        assert outcome.exit_code == DATAERR
        assert f"{run / 'status.json'}: supervisor_pid: Input should be" in outcome.output


def test_status_of_a_running_stack_and_of_none(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    env = {"PHOENIX_HOME": str(tmp_path)}
    outcome = CliRunner().invoke(stack_commands(), ["status"], env=env)
    assert outcome.exit_code == exitcodes.NOT_RUNNING
    assert "no stack is running" in outcome.output
    # This process plays the supervisor: its pid is alive.
    write_status(run, StackStatus(os.getpid(), 8080, "2026-03-01T10:00:00.000000Z"))
    outcome = CliRunner().invoke(stack_commands(), ["status", "--json"], env=env)
    assert outcome.exit_code == 0, outcome.output
    printed = json.loads(outcome.output)
    assert printed["supervisor_pid"] == os.getpid() and printed["workers"]["pids"] == []
    outcome = CliRunner().invoke(stack_commands(), ["status"], env=env)
    assert outcome.exit_code == 0 and "on port 8080" in outcome.output
