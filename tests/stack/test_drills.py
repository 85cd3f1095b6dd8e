"""Drills of `phoenix up`: crash storms, kill -9 of each child, scaling, shutdown.

Every drill starts its own stack on a free loopback port in a temporary home, sends bounded
traffic to 127.0.0.1 only, and stops the stack at the end.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest

from cloud_phoenix.drill.drills import answered, await_records, crash_drill, scale_drill
from cloud_phoenix.drill.loadgen import Drill, Phase, drive
from cloud_phoenix.drill.stats import summarize
from cloud_phoenix.journal import format_time
from cloud_phoenix.stack.status import StackStatus, read_status
from cloud_phoenix.store import Event, LogStore, open_store
from tests.fixtures.server import PhoenixProcess, running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.drill


def stack_store(stack: PhoenixProcess) -> LogStore:
    return open_store(f"sqlite:///{stack.home}/db/phoenix.sqlite3")


def status(stack: PhoenixProcess) -> StackStatus:
    data = read_status(stack.home / "run")
    assert data is not None, "the supervisor writes its status"
    return data


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` that still run (a zombie has ended)."""
    return [
        pid
        for pid in pids
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.parametrize("workers", [(1, 1), (3, 8)], ids=["single-worker", "several-workers"])
def test_crash_storm_under_load(tmp_path: Path, workers: tuple[int, int]) -> None:
    """A /crash every 250 ms for 20 s under 100 req/s of GET / and /logs: no other request
    fails, workers are back within 1 s, every answered request is stored exactly once."""
    low, high = workers
    with running_stack(
        tmp_path / "home", PHOENIX_MIN_WORKERS=str(low), PHOENIX_MAX_WORKERS=str(high)
    ) as stack:
        store = stack_store(stack)
        try:
            report = crash_drill(
                stack.url, stack.home / "run", store, seconds=20, rps=100, crash_every=0.25
            )

            def restarts_stored() -> list[Event] | None:
                found = store.events(limit=1000, kind="worker_restarted")
                return found if len(found) >= 60 else None

            # The supervisor writes events to the store once a second.
            stored_restarts = eventually(restarts_stored, 10, what="60 restarts in the store")
        finally:
            store.close()
        restarts = status(stack).restarts
        edge_log = (stack.home / "logs" / "haproxy.log").read_text(errors="replace")
    assert report.crashes == 80
    seen = [
        line
        for line in edge_log.splitlines()
        if any(f"id={rid}" in line for rid in report.failed_ids)
    ]
    assert report.failed == {}, f"{report}\nedge log:\n" + "\n".join(seen)
    assert report.sent >= 1990
    assert report.longest_below_desired_s <= 1.0, report
    assert not report.missing and not report.doubled, report
    assert restarts >= 60  # the crashes really killed workers (some may share a worker)
    assert len(stored_restarts) >= 60  # and each restart is an event in the store


def child_pid(stack: PhoenixProcess, name: str) -> int:
    pid = status(stack).children[name].pid
    assert isinstance(pid, int)
    return pid


def whole_again(stack: PhoenixProcess, name: str, old_pid: int, timeout: float) -> float | None:
    """Seconds until `name` runs with a new pid, workers are all up and the edge answers."""
    started = time.monotonic()

    def whole() -> bool:
        data = read_status(stack.home / "run")
        child = data.children.get(name) if data else None
        return bool(
            data
            and child
            and child.running
            and child.pid != old_pid
            and data.workers.running == data.workers.desired
            and httpx.get(stack.url + "/health", timeout=1).status_code == 200
        )

    try:
        eventually(whole, timeout, what=f"{name} back", ignore=(httpx.HTTPError,))
    except AssertionError:
        return None
    return time.monotonic() - started


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixProcess]:
    with running_stack(
        tmp_path_factory.mktemp("kill") / "home", PHOENIX_MIN_WORKERS="2", PHOENIX_MAX_WORKERS="2"
    ) as stack:
        yield stack


@pytest.mark.parametrize("name", ["gunicorn", "haproxy", "collector"])
def test_kill_9_of_a_child_under_load(shared_stack: PhoenixProcess, name: str) -> None:
    """kill -9 one child while 50 req/s run: whole again within 3 s, no refused connection,
    nothing lost or doubled in the store."""
    stack = shared_stack
    since = format_time(datetime.now(UTC) - timedelta(seconds=1))
    result: list[Drill] = []
    load = threading.Thread(
        target=lambda: result.append(
            drive(stack.url, [Phase(6, 50, ("/", "/logs?limit=5"))], request_id_prefix=f"k-{name}")
        )
    )
    load.start()
    time.sleep(2)  # on purpose: the kill falls in the middle of the load
    victim = child_pid(stack, name)
    os.kill(victim, signal.SIGKILL)
    recovered = whole_again(stack, name, victim, timeout=10)
    load.join(30)
    [run] = result
    summary = summarize(run.load)
    store = stack_store(stack)
    try:
        ids = await_records(store, since, answered(run.load))
    finally:
        store.close()
    assert recovered is not None and recovered <= 3.0, f"{name}: whole again after {recovered}"
    assert "connection refused" not in summary.reasons, summary.line()
    if name != "haproxy":  # requests inside the killed edge die with it; none other may fail
        assert not summary.failed, summary.line()
    assert len(summary.failed) <= 5, summary.line()
    assert answered(run.load) <= set(ids), "answered requests missing from the store"
    assert not [rid for rid, n in ids.items() if n > 1], "records doubled"


def test_scale_out_at_50_rps_and_back_in(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home", PHOENIX_SCALE_IN_WINDOW="5") as stack:
        report = scale_drill(stack.url, stack.home / "run", rps=50, seconds=8, settle=25)
        events = status(stack).events
    assert report.scale_out_s is not None and report.scale_out_s <= 3.0, report
    assert report.peak_workers >= 5, report
    assert report.scale_in_s is not None and report.scale_in_s <= 5 + 5, report
    assert not report.failed, report
    kinds = [e.kind for e in events]
    assert "scaled_out" in kinds and "scaled_in" in kinds


def test_sigterm_stops_everything_and_leaves_no_orphan(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home") as stack:
        pids = [c.pid for c in status(stack).children.values() if c.pid]
        pids += [w.pid for w in status(stack).workers.pids]
        code = stack.stop(timeout=40)
    assert code == 0
    eventually(lambda: not alive(pids), 5, what="every child gone", ignore=(psutil.Error,))
    with pytest.raises(httpx.ConnectError):
        httpx.get(stack.url + "/health", timeout=1)


def test_ctrl_c_reaches_only_the_supervisor_which_stops_and_restarts_nothing(
    tmp_path: Path,
) -> None:
    """A terminal's Ctrl-C goes to the whole foreground process group. HAProxy and gunicorn
    take SIGINT as a hard stop, so each child has a group of its own and only the supervisor
    hears it; and a child that exits while the stack stops is not restarted."""
    with running_stack(tmp_path / "home") as stack:
        children = status(stack).children
        group = os.getpgid(stack.process.pid)
        assert {name: os.getpgid(c.pid or 0) == group for name, c in children.items()} == {
            name: False for name in children
        }
        os.killpg(group, signal.SIGINT)  # what a terminal does on Ctrl-C
        code = stack.process.wait(40)
    assert code == 0
    store = stack_store(stack)
    try:
        restarted = store.events(limit=100, kind="child_restarted")
    finally:
        store.close()
    assert restarted == []
    log = stack.output.read_text(errors="replace")
    assert "restarting in" not in log


def test_kill_9_of_the_supervisor_takes_its_children_along(tmp_path: Path) -> None:
    with running_stack(tmp_path / "home") as stack:
        pids = [c.pid for c in status(stack).children.values() if c.pid]
        os.kill(stack.process.pid, signal.SIGKILL)
        stack.process.wait(10)
        eventually(lambda: not alive(pids), 10, what="every child gone", ignore=(psutil.Error,))
