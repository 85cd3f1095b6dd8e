"""The live operations page `/ops` in a real Chromium against a real `phoenix up`, and its
data `/ops/data` under `phoenix serve`, where no supervisor runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from cloud_phoenix.backup.runner import run_backup
from cloud_phoenix.config import Settings
from cloud_phoenix.stack.status import (
    Operations,
    StackStatus,
    Workers,
    WorkerState,
    write_status,
)
from cloud_phoenix.store import Event
from tests.fixtures.browser import ARTIFACTS, WAIT_MS, PageWatch
from tests.fixtures.server import PhoenixProcess, running_stack

pytestmark = pytest.mark.integration

RESTART_SHOWN_WITHIN_S = 2.0


def updates(page: Page) -> int:
    return int(page.locator("#ops").get_attribute("data-updates") or 0)


def counter(page: Page, name: str) -> int | None:
    value = page.locator(f"#{name}").get_attribute("data-value")
    return int(value) if value else None


def wait_for_updates(page: Page, at_least: int) -> None:
    page.wait_for_function(
        "n => Number(document.getElementById('ops').dataset.updates) >= n",
        arg=at_least,
        timeout=WAIT_MS,
    )


def chart_pixels(page: Page) -> dict[str, str]:
    return dict(
        page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('canvas')]"
            ".map(c => [c.id, c.toDataURL()]))"
        )
    )


def test_ops_page_draws_live_figures_and_shows_a_crash_as_a_restart(
    browser: Browser,
    tmp_path: Path,
) -> None:
    with running_stack(tmp_path / "home") as stack:
        watch = PageWatch()
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        page.on("console", watch.on_console)
        page.on("pageerror", watch.on_page_error)
        response = page.goto(stack.url + "/ops", wait_until="load")
        assert response is not None and response.status == 200

        wait_for_updates(page, 3)
        drawn = chart_pixels(page)
        assert set(drawn) == {"chart-rate", "chart-workers", "chart-cpu"}
        for name in drawn:
            assert int(page.locator(f"#{name}").get_attribute("data-samples") or 0) >= 3
        wait_for_updates(page, updates(page) + 2)
        redrawn = chart_pixels(page)
        # The x axis moves with time: every chart's pixels change from one second to the next.
        assert [name for name in drawn if drawn[name] == redrawn[name]] == []
        assert page.locator("#no-supervisor").is_hidden()
        assert page.locator("#banner").is_hidden()
        assert page.locator("#workers").inner_text() == "1 / 1"

        before = counter(page, "restarts")
        assert before is not None
        with pytest.raises(httpx.HTTPError):  # the worker exits before it answers
            httpx.get(stack.url + "/crash", timeout=5).raise_for_status()
        crashed = time.monotonic()
        page.wait_for_function(
            "n => Number(document.getElementById('restarts').dataset.value) > n",
            arg=before,
            timeout=RESTART_SHOWN_WITHIN_S * 1000,
        )
        shown_after = time.monotonic() - crashed
        assert shown_after <= RESTART_SHOWN_WITHIN_S
        events = page.locator("#events li .kind")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#events .kind')]"
            ".some(k => k.textContent === 'worker_restarted')",
            timeout=WAIT_MS,
        )
        assert "worker_restarted" in events.all_inner_texts()

        # One more second: the chart of workers shows the dip and the new worker's CPU line.
        wait_for_updates(page, updates(page) + 2)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ops.png"), full_page=True)
        print(f"restart shown {shown_after:.2f} s after the crash")
        assert page.locator("#banner").is_hidden()
        assert watch.errors() == []

        # /ops/data unreachable, as while the stack restarts: a banner, then recovery.
        page.route("**/ops/data", lambda route: route.abort())
        banner = page.locator("#banner")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("Cannot reach /ops/data")
        page.unroute("**/ops/data")
        expect(banner).to_be_hidden(timeout=WAIT_MS)
        # Chromium logs each aborted fetch itself: the expected outcome, not a page bug.
        aborted = re.compile(r"^Failed to load resource: net::ERR_FAILED .*/ops/data")
        assert [e for e in watch.console_errors if not aborted.match(e)] == []
        assert watch.page_errors == []


def test_ops_data_without_a_supervisor_is_the_one_process_and_nulls(
    phoenix_server: PhoenixProcess,
) -> None:
    page = httpx.get(phoenix_server.url + "/ops", timeout=5)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "style=" not in page.text
    assert "http://" not in page.text.replace('href="/', "")  # no CDN, nothing remote

    first = httpx.get(phoenix_server.url + "/ops/data", timeout=5)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    time.sleep(0.6)  # on purpose: a CPU percent needs two samples half a second apart
    data = httpx.get(phoenix_server.url + "/ops/data", timeout=5).json()
    assert data["supervisor"] == {
        "running": False,
        "pid": None,
        "updated": None,
        "age_s": None,
        "stopping": False,
    }
    assert data["served_by"].endswith(f":{phoenix_server.process.pid}")
    assert data["rate_rps"] is None
    assert data["restarts"] is None and data["scale_events"] is None
    assert data["events"] == []
    assert data["cpu_peaks"] == {"count": None, "active": False, "recent": []}
    assert data["workers"]["desired"] is None and data["workers"]["running"] is None
    [process] = data["workers"]["processes"]
    assert process["pid"] == phoenix_server.process.pid
    assert process["uptime_s"] > 0
    assert 0 <= process["cpu_percent"] <= 100
    assert 0 <= data["host_cpu_percent"] <= 100
    assert data["backups"] == {"last": None, "next": None, "at": "03:00"}


def test_ops_data_reads_the_status_and_backups_defensively(
    phoenix_server: PhoenixProcess,
) -> None:
    home = phoenix_server.home
    # A real backup of the server's database, then a newer one whose manifest is damaged
    # (half written, or another format): not good, so not the last backup; never a 500.
    made = run_backup(Settings.from_env({"PHOENIX_HOME": str(home)}))
    (home / "backups" / "phoenix-20990102T030000Z.manifest.json").write_text("{not json")
    run = home / "run"
    run.mkdir(exist_ok=True)
    # A status as the supervisor writes it; its pid is this test's, which is alive, so the
    # page takes it for a running supervisor.
    status = StackStatus(
        supervisor_pid=os.getpid(),
        port=phoenix_server.port,
        started="2025-01-01T00:00:00.000000Z",
        updated="2025-01-01T00:00:00.000000Z",
        workers=Workers(2, 1, (WorkerState(phoenix_server.process.pid, 4.2),)),
        rate_rps=12.5,
        restarts=3,
        scale_events=4,
        events=[
            Event("2025-01-01T00:00:01.000000Z", "scaled_out", "2 now"),
            Event("2025-01-01T00:00:02.000000Z", "cpu_peak_started", "hot"),
            Event("2025-01-01T00:00:03.000000Z", "worker_restarted", "w"),
        ],
        # More peaks than the recent events show: the supervisor's count is the count.
        operations=Operations(cpu_peaks=5, cpu_in_peak=True),
    )
    write_status(run, status)
    data = httpx.get(phoenix_server.url + "/ops/data", timeout=5).json()
    assert data["supervisor"]["running"] is True
    assert data["supervisor"]["pid"] == os.getpid()
    assert data["supervisor"]["age_s"] > 0
    assert data["rate_rps"] == 12.5
    assert data["restarts"] == 3
    assert data["scale_events"] == 4
    assert (data["workers"]["desired"], data["workers"]["running"]) == (2, 1)
    assert [p["pid"] for p in data["workers"]["processes"]] == [phoenix_server.process.pid]
    assert [e["kind"] for e in data["events"]] == [
        "worker_restarted",
        "cpu_peak_started",
        "scaled_out",
    ]
    assert data["cpu_peaks"]["count"] == 5 and data["cpu_peaks"]["active"] is True
    assert data["backups"]["last"] == made.manifest.created_at
    assert data["backups"]["next"] is not None

    # A file with junk where another version might differ is not taken for the stack's
    # state: no supervisor, and never a 500.
    junk = json.loads((run / "status.json").read_text())
    junk["scale_events"] = "many"
    (run / "status.json").write_text(json.dumps(junk))
    data = httpx.get(phoenix_server.url + "/ops/data", timeout=5).json()
    assert data["supervisor"]["running"] is False and data["restarts"] is None

    # The file a supervisor killed with -9 leaves behind is not a running stack.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    write_status(run, replace(status, supervisor_pid=int(dead.stdout)))
    data = httpx.get(phoenix_server.url + "/ops/data", timeout=5).json()
    assert data["supervisor"]["running"] is False
    assert data["supervisor"]["updated"] == status.updated
    assert data["restarts"] is None
    (run / "status.json").write_text("{")
    assert httpx.get(phoenix_server.url + "/ops/data", timeout=5).status_code == 200
