"""`phoenix collect --drain SECONDS`, a pod's preStop: it waits until the store holds the
whole journal, bounded, and says what it leaves when the time runs out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_phoenix.collector.drain import wait_collected
from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.config import Settings
from cloud_phoenix.exitcodes import TEMPFAIL
from cloud_phoenix.store.sqlite import SQLiteStore
from tests.collector.test_loop import write


class FakeTime:
    """A clock that a pause moves on, so a bounded wait ends without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def settings_for(home: Path) -> Settings:
    return Settings.from_env({"PHOENIX_HOME": str(home)})


def test_a_journal_the_store_holds_is_drained_at_once(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write(settings.journal_dir, 25)
    store = SQLiteStore.from_url(settings.db_url)
    Collector(store, settings.journal_dir, batch_size=10).collect_once()
    store.close()
    time = FakeTime()
    drained = wait_collected(settings, 300, time.clock, time.pause)
    assert (drained.collected, drained.bytes_left, time.pauses) == (True, 0, [])


def test_an_uncollected_journal_is_waited_for_only_until_the_bound(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write(settings.journal_dir, 25)
    time = FakeTime()
    drained = wait_collected(settings, 4.5, time.clock, time.pause)
    assert not drained.collected
    assert (
        drained.bytes_left
        == (settings.journal_dir / os.listdir(settings.journal_dir)[0]).stat().st_size
    )
    assert drained.waited == pytest.approx(4.5)
    assert sum(time.pauses) == pytest.approx(4.5)


def run_phoenix(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cloud_phoenix", *args],
        env={**os.environ, "PHOENIX_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_the_drain_returns_once_the_running_collector_has_it_all(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write(settings.journal_dir, 40)
    drain = run_phoenix(tmp_path, "collect", "--drain", "60")
    collector = run_phoenix(tmp_path, "collect")
    try:
        _, err = drain.communicate(timeout=60)
        assert drain.returncode == 0, err
    finally:
        collector.terminate()
        collector.communicate(timeout=30)
    store = SQLiteStore.from_url(settings.db_url)
    try:
        assert store.count() == 40
    finally:
        store.close()


@pytest.mark.integration
def test_a_drain_with_nobody_collecting_exits_75_and_says_what_is_left(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    write(settings.journal_dir, 3)
    drain = run_phoenix(tmp_path, "collect", "--drain", "0.2")
    _, err = drain.communicate(timeout=60)
    assert drain.returncode == TEMPFAIL
    assert "bytes left in the journal" in err and "Traceback" not in err
