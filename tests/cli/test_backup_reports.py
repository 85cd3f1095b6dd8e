"""`phoenix backup` reports as the stack does: a failure to the PHOENIX_NOTIFY_URLS targets
(through the shared Notifier) and every outcome into the store's `events` (EventLog)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloud_phoenix.cli.backup import register
from cloud_phoenix.config import Settings
from cloud_phoenix.store import Event, open_store
from tests.fixtures.webhook import Receiver


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home whose (empty) database exists: there is something to back up."""
    store = open_store(Settings.from_env({"PHOENIX_HOME": str(tmp_path)}).db_url)
    try:
        store.migrate()
    finally:
        store.close()
    return tmp_path


def backup(home: Path, **env: str) -> Any:
    app = typer.Typer()
    register(app)
    return CliRunner().invoke(app, ["backup"], env={"PHOENIX_HOME": str(home), **env})


def stored_events(home: Path) -> list[Event]:
    store = open_store(Settings.from_env({"PHOENIX_HOME": str(home)}).db_url)
    try:
        return store.events(limit=100)
    finally:
        store.close()


def test_a_backup_is_recorded_in_the_events(home: Path) -> None:
    outcome = backup(home)
    assert outcome.exit_code == 0, outcome.output
    [event] = stored_events(home)
    assert event.kind == "backup_created" and event.message.startswith("backup phoenix-")


def test_a_failed_backup_is_notified_and_recorded(home: Path, receiver: Receiver) -> None:
    (home / "backups").write_text("a file where the folder should be")
    outcome = backup(home, PHOENIX_NOTIFY_URLS=receiver.url())
    assert outcome.exit_code == 73
    assert outcome.output.startswith("phoenix: cannot write")
    # Delivered before the command exits: nothing to wait for.
    [notice] = receiver.delivered
    assert notice["title"] == "phoenix backup failed"
    assert "There is no good backup yet." in notice["message"]
    [event] = stored_events(home)
    assert event.kind == "backup_failed" and event.data == {"code": 73}


def test_an_unusable_notification_url_does_not_cost_the_backup(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = backup(home, PHOENIX_NOTIFY_URLS="nosuchservice://token-hunter2@example.org/")
    assert outcome.exit_code == 0, outcome.output
    assert "PHOENIX_NOTIFY_URLS" in outcome.output and "will not be notified" in outcome.output
    assert "hunter2" not in outcome.output and "hunter2" not in caplog.text
    assert [event.kind for event in stored_events(home)] == ["backup_created"]
