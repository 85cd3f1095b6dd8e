"""The application alone knows nothing of the stack; what a host plugs in (`Extension`) is
routed, served, scraped and kept alive where `create_app` promises."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from cloud_phoenix.app import Extension, PhoenixApp, create_app
from cloud_phoenix.app.runtime import Runtime
from cloud_phoenix.config import Settings

APP_STATIC = Path(__file__).parents[2] / "src" / "cloud_phoenix" / "app" / "static"


def settings_in(home: Path) -> Settings:
    return Settings.from_env(
        {"PHOENIX_HOME": str(home), "PHOENIX_ACCESS_LOG": "false", "PHOENIX_CERT_POOL": "0"}
    )


def client_of(app: PhoenixApp) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


def test_importing_the_application_loads_nothing_of_the_stack() -> None:
    code = (
        "import sys, cloud_phoenix.app\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2] in ("
        "['cloud_phoenix', 'stack'], ['cloud_phoenix', 'backup'], ['cloud_phoenix', 'collector']"
        ")))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert loaded.stdout.strip() == "[]"


def test_the_application_alone_has_no_operations_page_figures_or_collector(
    tmp_path: Path,
) -> None:
    with client_of(create_app(settings_in(tmp_path))) as client:
        assert "collector-keeper" not in {thread.name for thread in threading.enumerate()}
        assert client.get("/ops").status_code == 404
        assert client.get("/ops/data").status_code == 404
        assert client.get("/static/ops.js").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert [path for path in paths if path.startswith("/ops")] == []
        text = client.get("/metrics").text
    assert "phoenix_journal_lag_bytes" in text  # the application's own figure
    assert "phoenix_backups" not in text and "phoenix_cpu_peaks_total" not in text


def test_an_extension_s_routes_come_after_the_application_s_own_and_in_the_catalogue(
    tmp_path: Path,
) -> None:
    router = APIRouter()

    @router.get("/extra", summary="A page of the host's")
    def extra() -> dict[str, str]:
        return {"from": "the host"}

    settings = settings_in(tmp_path)
    alone = create_app(settings)
    own = alone.openapi()["paths"]
    alone.state.runtime.store.close()
    with client_of(create_app(settings, extensions=[Extension(routers=(router,))])) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert list(paths) == [*own, "/extra"]
        assert {path: paths[path] for path in own} == own  # the application's own, unchanged
        assert 'data-path="/extra"' in client.get("/").text
        assert client.get("/extra").json() == {"from": "the host"}
        text = client.get("/metrics").text
    assert 'phoenix_requests_total{method="GET",route="/extra",status="200"} 1.0' in text


def test_an_extension_s_static_files_are_served_behind_the_application_s_own(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "static"
    folder.mkdir()
    (folder / "extra.js").write_text("// the host's\n")
    (folder / "app.css").write_text("/* a host's file of the application's name */\n")
    (tmp_path / "secret.txt").write_text("not to be served\n")
    app = create_app(settings_in(tmp_path / "home"), extensions=[Extension(static=(folder,))])
    with client_of(app) as client:
        assert client.get("/static/extra.js").text == "// the host's\n"
        assert client.get("/static/app.css").text == (APP_STATIC / "app.css").read_text()
        assert client.get("/static/missing.js").status_code == 404
        assert client.get("/static/..%2Fsecret.txt").status_code == 404  # beside the folder


def test_an_extension_s_figures_are_scraped_and_a_failing_one_fails_no_scrape(
    tmp_path: Path,
) -> None:
    def broken() -> dict[str, float]:
        raise OSError("the status file is unreadable")

    extension = Extension(figures=(lambda: {"phoenix_host_figure": 3.0}, broken))
    with client_of(create_app(settings_in(tmp_path), extensions=[extension])) as client:
        scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert "phoenix_host_figure 3.0" in scrape.text
    assert "phoenix_journal_lag_bytes" in scrape.text


class Lifetimes:
    """Context managers that note when they are entered and exited, and check there that the
    key pool hands out a key and the store answers."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.runtime: Runtime | None = None

    def sync(self) -> Lifetimes.Sync:
        return Lifetimes.Sync(self)

    def later(self) -> Lifetimes.Async:
        return Lifetimes.Async(self)

    async def usable(self) -> None:
        assert self.runtime is not None
        await self.runtime.pool.take()  # raises once the pool is stopped
        self.runtime.store.count()

    class Sync:
        def __init__(self, noted: Lifetimes) -> None:
            self.noted = noted

        def __enter__(self) -> None:
            self.noted.events.append("sync in")

        def __exit__(self, *_exc: object) -> None:
            self.noted.events.append("sync out")

    class Async:
        def __init__(self, noted: Lifetimes) -> None:
            self.noted = noted

        async def __aenter__(self) -> None:
            await self.noted.usable()
            self.noted.events.append("async in")

        async def __aexit__(self, *_exc: object) -> None:
            await self.noted.usable()
            self.noted.events.append("async out")


def test_lifetimes_run_while_the_pool_runs_entered_in_order_exited_in_reverse(
    tmp_path: Path,
) -> None:
    noted = Lifetimes()
    extensions = [Extension(lifetime=noted.sync), Extension(lifetime=noted.later)]
    app = create_app(settings_in(tmp_path), extensions=extensions)
    noted.runtime = app.state.runtime
    with client_of(app) as client:
        assert noted.events == ["sync in", "async in"]
        assert client.get("/health").status_code == 200
    assert noted.events == ["sync in", "async in", "async out", "sync out"]


def test_a_lifetime_that_cannot_start_stops_those_started_and_the_application(
    tmp_path: Path,
) -> None:
    noted = Lifetimes()

    class Refused(Exception):
        pass

    def refuse() -> Lifetimes.Sync:
        raise Refused

    extensions = [Extension(lifetime=noted.sync), Extension(lifetime=refuse)]
    app = create_app(settings_in(tmp_path), extensions=extensions)
    rt: Runtime = app.state.runtime
    with pytest.raises(Refused), client_of(app):
        pass
    assert noted.events == ["sync in", "sync out"]
    with pytest.raises(RuntimeError, match="not started"):  # the pool was stopped too
        asyncio.run(rt.pool.take())
