"""/metrics with several worker processes (gunicorn + uvicorn workers): the figures are the
sum over every worker, whichever worker answers the scrape."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ports import free_port
from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration


def test_request_counts_are_summed_over_every_worker(tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PHOENIX_HOME": str(tmp_path / "home"),
        "PHOENIX_ACCESS_LOG": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PHOENIX_SERVE_COLLECTOR": "false",
        "PHOENIX_CERT_POOL": "0",
    }
    gunicorn = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--bind",
            f"127.0.0.1:{port}",
            "cloud_phoenix.stack.workerapp:from_environment()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    probes = 0  # those that may have reached a worker, and been counted there

    def answers() -> bool:
        nonlocal probes
        probes += 1
        try:
            return httpx.get(url + "/health", timeout=1).status_code == 200
        except httpx.ConnectError:  # refused: no worker saw it
            probes -= 1
        except httpx.HTTPError:  # a slow answer, counted by the worker all the same
            pass
        return False

    try:
        eventually(answers, 30, what="gunicorn to answer /health", interval=0.1)
        workers = set()
        for n in range(60):  # a new connection each: the kernel spreads them over workers
            response = httpx.get(url + "/health", params={"n": n}, timeout=5)
            assert response.status_code == 200
            workers.add(response.headers["x-phoenix-worker"])
        assert len(workers) == 2, "both workers should have answered some requests"
        for _ in range(3):  # any worker's scrape sees the sum
            text = httpx.get(url + "/metrics", timeout=5).text
            match = re.search(
                r'^phoenix_requests_total\{method="GET",route="/health",status="200"\} (\S+)$',
                text,
                re.MULTILINE,
            )
            assert match, text[:2000]
            assert float(match.group(1)) >= 60
            assert float(match.group(1)) <= 60 + probes
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(gunicorn.pid, signal.SIGKILL)
            gunicorn.wait(5)


def requests_by_route(text: str) -> dict[str, float]:
    """phoenix_requests_total summed over method and status, by route."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "phoenix_requests":
            for sample in family.samples:
                if sample.name == "phoenix_requests_total":
                    route = sample.labels["route"]
                    totals[route] = totals.get(route, 0.0) + sample.value
    return totals


def dead_processes_files(metrics_dir: Path) -> list[str]:
    """The files in the folder of processes that no longer run (`counter_PID.db`, ...)."""
    return [
        path.name
        for path in metrics_dir.glob("*.db")
        if path.stem.rpartition("_")[2].isdigit()
        and not psutil.pid_exists(int(path.stem.rpartition("_")[2]))
    ]


def test_crashes_neither_fill_the_folder_nor_let_a_counter_go_down(tmp_path: Path) -> None:
    """200 /crash against `phoenix up` (2 workers) while another client scrapes /metrics
    back to back: the folder ends with the live processes' files plus a constant, each
    scrape sees phoenix_requests_total at least as high as the one before, and the /crash
    count is each crash once (the dead workers' counts are kept, none twice)."""
    crashes, workers = 200, 2
    with running_stack(
        tmp_path / "home", PHOENIX_MIN_WORKERS=str(workers), PHOENIX_MAX_WORKERS=str(workers)
    ) as stack:
        metrics_dir = stack.home / "run" / "metrics"
        stop = threading.Event()
        seen: list[float] = []  # the sum over every label, scrape after scrape
        failed: list[str] = []

        def scrape() -> None:
            with httpx.Client(base_url=stack.url, timeout=10) as client:
                while not stop.is_set():
                    try:
                        response = client.get("/metrics")
                    except httpx.HTTPError as exc:  # the edge lost its worker mid-answer
                        failed.append(repr(exc))
                        continue
                    if response.status_code != 200:
                        failed.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    seen.append(sum(requests_by_route(response.text).values()))

        scraper = threading.Thread(target=scrape, name="scraper")
        scraper.start()
        gunicorn_log = stack.home / "logs" / "gunicorn.log"

        def killed() -> int:  # what each worker says before it exits on /crash
            return gunicorn_log.read_text(errors="replace").count(" exits now")

        try:
            deadline = time.monotonic() + 150
            while (n := killed()) < crashes:
                assert time.monotonic() < deadline, f"only {n} crashes in 150 s"
                # 502 when a worker died of it; 503 when the edge had no worker to send it to
                with httpx.Client(base_url=stack.url, timeout=10) as client:
                    assert client.get("/crash").status_code in (502, 503)
        finally:
            stop.set()
            scraper.join(30)
        # The master folds the last one when it reaps it.
        eventually(
            lambda: not dead_processes_files(metrics_dir), 10, what="the dead workers' files gone"
        )
        files = sorted(path.name for path in metrics_dir.iterdir())
        text = httpx.get(stack.url + "/metrics", timeout=10).text
    # The crashes come back to back here (each worker dies as soon as it serves): a scrape
    # may find every retry's worker dead. Enough of them must still be answered to compare.
    assert len(seen) >= 10, f"only {len(seen)} scrapes answered; failures: {failed[:5]}"
    drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not drops, f"phoenix_requests_total went down: {drops[:5]}"
    # counter, histogram and live gauge of each worker, the master's counter, the two
    # archives and the lock
    assert len(files) <= 3 * workers + 4, files
    assert requests_by_route(text).get("/crash") == crashes  # each once: none lost, none twice
