"""`phoenix up` with PHOENIX_INSTANCE=volume: one id for the home, kept across restarts, and
the same in every child the supervisor starts, whatever happens to the file meanwhile."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from cloud_phoenix.journal import INSTANCE_RE
from cloud_phoenix.stack.status import read_status
from cloud_phoenix.store import LogQuery, open_store
from tests.fixtures.server import running_stack

pytestmark = pytest.mark.integration


def stored(home: Path, request_id: str) -> bool:
    store = open_store(f"sqlite:///{home}/db/phoenix.sqlite3")
    try:
        return any(row.record.request_id == request_id for row in store.query(LogQuery()))
    finally:
        store.close()


def wait_until_stored(home: Path, request_id: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not stored(home, request_id):
        assert time.monotonic() < deadline, f"{request_id} not collected in {timeout} s"
        time.sleep(0.2)


def test_a_volume_instance_names_the_journal_and_outlives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_stack(home, PHOENIX_INSTANCE="volume") as stack:
        instance = (home / "instance-id").read_text().strip()
        assert INSTANCE_RE.match(instance), instance
        httpx.get(f"{stack.url}/health", headers={"X-Request-ID": "first-run"}, timeout=5)
        wait_until_stored(home, "first-run")
        # The file is damaged while the stack runs: its children keep the id the supervisor
        # read (a collector restarted now would otherwise refuse to start).
        (home / "instance-id").write_text("damaged!\n")
        status = read_status(home / "run")
        assert status is not None
        collector = status.children["collector"].pid
        assert collector is not None
        os.kill(collector, signal.SIGKILL)
        httpx.get(f"{stack.url}/health", headers={"X-Request-ID": "after-kill"}, timeout=5)
        wait_until_stored(home, "after-kill")
        assert stack.stop() == 0
    (home / "instance-id").write_text(f"{instance}\n")  # the operator puts it back
    with running_stack(home, PHOENIX_INSTANCE="volume") as stack:
        httpx.get(f"{stack.url}/health", headers={"X-Request-ID": "second-run"}, timeout=5)
        wait_until_stored(home, "second-run")
    names = {path.name.split(".")[1] for path in (home / "journal").glob("access-*.jsonl")}
    assert names == {instance}
