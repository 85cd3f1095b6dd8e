"""/metrics with several worker processes (gunicorn + uvicorn workers): the figures are the
sum over every worker, whichever worker answers the scrape."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import free_port

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
            "cloud_phoenix.app:from_environment()",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        probes = 0  # those that may have reached a worker, and been counted there
        while time.monotonic() < deadline:
            try:
                probes += 1
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.ConnectError:  # refused: no worker saw it
                probes -= 1
                time.sleep(0.1)
            except httpx.HTTPError:  # a slow answer, counted by the worker all the same
                time.sleep(0.1)
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
