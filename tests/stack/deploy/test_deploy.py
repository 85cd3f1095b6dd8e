"""`phoenix deploy` drills: a deploy under 100 req/s drops no request; a broken build is
rolled back, also without dropping one.

Each drill runs against a real `phoenix up` on a free loopback port in a temporary home,
sends bounded traffic to 127.0.0.1 only, and the stack is always stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_phoenix import exitcodes
from cloud_phoenix.drill.loadgen import Drill, Phase, drive
from cloud_phoenix.drill.stats import Summary, summarize
from cloud_phoenix.stack.status import StackStatus, read_status
from tests.fixtures.server import PhoenixProcess, running_stack

pytestmark = pytest.mark.drill

MISSING = "cloud_phoenix_missing_dependency"
# A new build whose code cannot be imported: one of its modules needs a missing dependency.
BROKEN_BUILD = f'"""A broken build."""\n\nimport {MISSING}\n\napp = {MISSING}.app\n'
LOAD_SECONDS = 12.0


def status(stack: PhoenixProcess) -> StackStatus:
    data = read_status(stack.home / "run")
    assert data is not None, "the supervisor writes its status"
    return data


def worker_pids(stack: PhoenixProcess) -> set[int]:
    return {w.pid for w in status(stack).workers.pids}


def phoenix_deploy(stack: PhoenixProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", "deploy", *args],
        env={**os.environ, "PHOENIX_HOME": str(stack.home), "PORT": str(stack.port)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def deploy_under_load(
    stack: PhoenixProcess, *args: str, prefix: str
) -> tuple[subprocess.CompletedProcess[str], float, Summary, Drill]:
    """100 req/s of GET / and /logs for 12 s, with `phoenix deploy ARGS` 4 s in."""
    runs: list[Drill] = []
    load = threading.Thread(
        target=lambda: runs.append(
            drive(
                stack.url,
                [Phase(LOAD_SECONDS, 100, ("/", "/logs?limit=5"))],
                request_id_prefix=prefix,
            )
        )
    )
    load.start()
    try:
        time.sleep(4)  # on purpose: the deploy falls in the middle of the load
        started = time.monotonic()
        result = phoenix_deploy(stack, *args)
        took = time.monotonic() - started
    finally:
        load.join(LOAD_SECONDS + 60)
    assert not load.is_alive() and runs, "the load run ends"
    summary = summarize(runs[0].load)
    print(f"\n{' '.join(args) or 'deploy'}: {took:.2f} s, {summary.line()}\n{result.stdout}")
    return result, took, summary, runs[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixProcess]:
    root = tmp_path_factory.mktemp("deploy")
    build = root / "build"
    build.mkdir()
    (build / "broken_build.py").write_text(BROKEN_BUILD)
    path = os.pathsep.join(p for p in (str(build), os.environ.get("PYTHONPATH", "")) if p)
    with running_stack(
        root / "home", PHOENIX_MIN_WORKERS="2", PHOENIX_MAX_WORKERS="2", PYTHONPATH=path
    ) as running:
        yield running


def test_a_deploy_under_100_rps_drops_no_request(stack: PhoenixProcess) -> None:
    before = status(stack)
    old_workers = worker_pids(stack)
    old_master = before.children["gunicorn"].pid
    result, took, summary, run = deploy_under_load(stack, prefix="deploy-ok")
    after = status(stack)
    new_workers = worker_pids(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deployed in" in result.stdout and "draining the old ones" in result.stdout
    assert summary.sent >= LOAD_SECONDS * 100 - 5
    assert not summary.failed, summary.line()
    assert len(new_workers) == 2 and not new_workers & old_workers, (old_workers, new_workers)
    assert after.children["gunicorn"].pid != old_master
    # The old generation left quietly: no worker counted as crashed, no restart.
    assert after.restarts == before.restarts
    kinds = [e.kind for e in after.events]
    assert "deploy_succeeded" in kinds and "worker_restarted" not in kinds
    # The new workers really serve: the last second's answers all come from them.
    late = [r for r in run.load if r.sent_at >= LOAD_SECONDS - 1 and r.worker]
    assert late and {int(r.worker.rsplit(":", 1)[1]) for r in late if r.worker} <= new_workers
    assert took < 30


def test_a_broken_build_is_rolled_back_without_dropping_a_request(stack: PhoenixProcess) -> None:
    old_workers = worker_pids(stack)
    old_master = status(stack).children["gunicorn"].pid
    result, _took, summary, _run = deploy_under_load(
        stack, "--app", "broken_build:app", prefix="deploy-broken"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolled back" in result.stderr
    assert f"No module named '{MISSING}'" in result.stderr, result.stderr
    assert not summary.failed, summary.line()
    assert worker_pids(stack) == old_workers
    assert status(stack).children["gunicorn"].pid == old_master
    failed = [e for e in status(stack).events if e.kind == "deploy_failed"]
    assert failed and MISSING in failed[-1].data["reason"]


def test_new_workers_failing_their_readiness_check_are_stopped(stack: PhoenixProcess) -> None:
    """An app that imports but answers /ready with 500: stopped at once, not at the timeout."""
    old_workers = worker_pids(stack)
    started = time.monotonic()
    result = phoenix_deploy(stack, "--app", "cloud_phoenix.app:create_app", "--timeout", "30")
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fail their readiness check: /ready answered 500" in result.stderr
    assert took < 15
    assert worker_pids(stack) == old_workers


def test_no_stack_no_deploy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", "deploy"],
        env={**os.environ, "PHOENIX_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == exitcodes.NOT_RUNNING
    assert "no stack is running" in result.stderr
