"""Operations inside `phoenix up`: a minute idle gives no notice and the daily backup runs at
its time; then a CPU peak under a /generatecert load is notified once when it starts and
once when it ends, through Apprise to a loopback webhook, and recorded."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloud_phoenix.backup.catalog import scan
from cloud_phoenix.stack.status import read_status
from cloud_phoenix.store import open_store
from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually
from tests.fixtures.webhook import Receiver

pytestmark = pytest.mark.drill


def hammer(url: str, until: float) -> None:
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError):
                client.get(url + "/generatecert", params={"cn": "peak.test"})


def test_idle_minute_daily_backup_then_one_notice_per_peak(
    tmp_path: Path, receiver: Receiver
) -> None:
    backup_at = (datetime.now() + timedelta(minutes=1)).strftime("%H:%M")  # local time
    with running_stack(
        tmp_path / "home",
        PHOENIX_NOTIFY_URLS=receiver.url(),
        PHOENIX_CPU_THRESHOLD="70",
        PHOENIX_CPU_PEAK_SECONDS="2",
        PHOENIX_CPU_INTERVAL="0.5",
        PHOENIX_MIN_WORKERS="2",
        PHOENIX_MAX_WORKERS="2",
        PHOENIX_BACKUP_AT=backup_at,
    ) as stack:
        idle_until = time.monotonic() + 60
        # A backup's files appear before its manifest, written last: wait for the manifest.
        [backup] = eventually(
            lambda: [b for b in scan(stack.home / "backups") if b.manifest is not None],
            75,
            what="the daily backup, its manifest written",
        )
        time.sleep(max(0.0, idle_until - time.monotonic()))  # the idle minute, on purpose
        assert receiver.requests == [], "an idle minute sent a notice"
        assert backup.good and backup.manifest is not None
        until = time.monotonic() + 6
        clients = [threading.Thread(target=hammer, args=(stack.url, until)) for _ in range(4)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(40)
        assert receiver.wait_for(2, timeout=30), receiver.requests
        time.sleep(3)  # time passes on purpose: nothing more may follow
        status = read_status(stack.home / "run")
        assert status is not None
        metrics = httpx.get(stack.url + "/metrics", timeout=10).text
        store = open_store(f"sqlite:///{stack.home}/db/phoenix.sqlite3")

        def peak_events() -> list[str] | None:
            kinds = [e.kind for e in store.events(limit=50) if e.kind.startswith("cpu_peak")]
            return kinds if len(kinds) >= 2 else None

        try:
            # The supervisor writes events to the store once a second.
            kinds = eventually(peak_events, 10, what="the two CPU peak events in the store")
        finally:
            store.close()
    delivered = receiver.delivered
    assert [p["type"] for p in delivered] == ["warning", "info"], delivered
    start, end = delivered
    assert "/generatecert" in start["message"] and "Workers: 2" in start["message"]
    assert "worker (pid" in start["message"]
    assert end["title"].startswith("CPU peak ended")
    assert status.operations.cpu_peaks == 1 and status.operations.notifications_sent == 2
    assert "phoenix_cpu_peaks_total 1.0" in metrics
    assert sorted(kinds) == ["cpu_peak_ended", "cpu_peak_started"]
    assert "phoenix_backups 1.0" in metrics
