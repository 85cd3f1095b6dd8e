"""The container health check that asks the stack's own edge (cloud_phoenix.stack.edge.health),
never its address: where two stacks share an address (PHOENIX_REUSE_PORT, a start-first
update), the address answers for the one that serves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.ports import free_port
from tests.fixtures.server import running_stack

pytestmark = pytest.mark.integration


def health(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix.stack.edge.health"],
        env={**os.environ, "PHOENIX_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_stack_that_serves_is_healthy(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home") as stack:
        deadline = time.monotonic() + 15  # the edge's first check of the workers
        while (result := health(stack.home)).returncode != 0:
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.2)


def test_no_stack_is_unhealthy_and_says_why(tmp_path: Path) -> None:
    result = health(tmp_path / "nothing-here")
    assert result.returncode == 1
    assert "no HAProxy admin socket" in result.stderr


def test_a_stack_that_cannot_serve_is_unhealthy_though_its_address_answers(
    tmp_path: Path,
) -> None:
    port = str(free_port())
    with running_stack(tmp_path / "old", PHOENIX_REUSE_PORT="true", PORT=port) as old:
        env = {
            **os.environ,
            "PHOENIX_HOME": str(tmp_path / "new"),
            "PORT": port,
            "PHOENIX_REUSE_PORT": "true",
            "PHOENIX_WORKER_APP": "cloud_phoenix.no_such_module:app",
        }
        with open(tmp_path / "new.log", "wb") as log:
            new = subprocess.Popen(
                [sys.executable, "-m", "cloud_phoenix", "up"], env=env, stdout=log, stderr=log
            )
        try:
            deadline = time.monotonic() + 30
            while "gunicorn exited" not in (tmp_path / "new.log").read_text(errors="replace"):
                assert time.monotonic() < deadline and new.poll() is None
                time.sleep(0.1)
            # A probe of the address is answered by the old stack ...
            assert httpx.get(f"{old.url}/health", timeout=5).status_code == 200
            # ... the new one's own check says it cannot serve.
            result = health(tmp_path / "new")
            assert result.returncode == 1, result.stderr
            assert health(old.home).returncode == 0
        finally:
            new.terminate()
            new.wait(30)
