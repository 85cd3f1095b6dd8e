"""The application as the stack serves it: the operations page and figures plugged in by
`worker_app` (gunicorn's workers) and `served_app` (`phoenix serve`, with its collector)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from gunicorn.util import import_app

from cloud_phoenix.app import PhoenixApp, create_app
from cloud_phoenix.backup import run_backup
from cloud_phoenix.config import Settings
from cloud_phoenix.stack import ops
from cloud_phoenix.stack.status import Operations, StackStatus, write_status
from cloud_phoenix.stack.workerapp import served_app, worker_app

KEEPER = "collector-keeper"  # the thread of `phoenix serve` that keeps its collector alive


def settings_in(home: Path, **env: str) -> Settings:
    return Settings.from_env(
        {
            "PHOENIX_HOME": str(home),
            "PHOENIX_ACCESS_LOG": "false",
            "PHOENIX_CERT_POOL": "0",
            "PHOENIX_COLLECT_INTERVAL": "0.05",
            **env,
        }
    )


def client_of(app: PhoenixApp) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def keepers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == KEEPER]


def test_the_worker_app_is_the_application_with_the_operations_page_last(
    tmp_path: Path,
) -> None:
    settings = settings_in(tmp_path)
    alone = create_app(settings)
    own = alone.openapi()["paths"]
    alone.state.runtime.store.close()
    with client_of(worker_app(settings)) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert list(paths) == [*own, "/ops", "/ops/data"]
        assert {path: paths[path] for path in own} == own
        catalogue = client.get("/").text
        assert 'data-path="/ops"' in catalogue and 'data-path="/ops/data"' in catalogue
        page = client.get("/ops")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        for name in ("ops.js", "ops.css"):
            assert f"/static/{name}" in page.text
            assert client.get(f"/static/{name}").text == (ops.STATIC / name).read_text()
        assert client.get("/static/app.css").status_code == 200  # the application's own
        data = client.get("/ops/data").json()
        assert data["supervisor"]["running"] is False and data["backups"]["last"] is None


def test_metrics_show_backups_and_the_age_of_the_last(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    with client_of(worker_app(settings)) as client:
        before = client.get("/metrics").text
        run_backup(settings)
        text = client.get("/metrics").text
    assert "phoenix_backups 0.0" in before
    assert "phoenix_backups 1.0" in text
    [age] = [
        float(line.split()[1])
        for line in text.splitlines()
        if line.startswith("phoenix_last_backup_age_seconds ")
    ]
    assert 0 <= age < 60


def test_metrics_show_the_supervisors_counters_from_its_status_file(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    status = StackStatus(os.getpid(), settings.port, "2026-12-04T00:00:00.000000Z")
    status.operations = Operations(cpu_peaks=2, backups_failed=1, edge_dropped_logs=7)
    write_status(settings.run_dir, status)
    with client_of(worker_app(settings)) as client:
        text = client.get("/metrics").text
    assert "phoenix_cpu_peaks_total 2.0" in text
    assert "phoenix_backups_failed_total 1.0" in text
    assert "phoenix_edge_dropped_logs_total 7.0" in text


def test_a_worker_keeps_no_collector_phoenix_serve_keeps_one_that_collects(
    tmp_path: Path,
) -> None:
    with client_of(worker_app(settings_in(tmp_path / "worker"))):
        assert keepers() == []
    with client_of(served_app(settings_in(tmp_path / "served", PHOENIX_SERVE_COLLECTOR="0"))):
        assert keepers() == []
    served = served_app(settings_in(tmp_path / "serve"))
    with client_of(served) as client:
        assert len(keepers()) == 1
        assert client.get("/health").status_code == 200
        store = served.state.runtime.store
        deadline = time.monotonic() + 30
        while store.count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.count() >= 1, "the collector child stored no record"
    assert keepers() == []  # stopped with the application


def test_gunicorn_s_default_target_is_the_worker_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOENIX_HOME", str(tmp_path))
    for name in ("PHOENIX_WORKER_APP", "PROMETHEUS_MULTIPROC_DIR", "DB_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    target = Settings.from_env({}).worker_app
    assert target == "cloud_phoenix.stack.workerapp:from_environment()"
    app = import_app(target)
    assert isinstance(app, PhoenixApp)
    try:
        assert "/ops" in app.openapi()["paths"]
    finally:
        app.state.runtime.store.close()
