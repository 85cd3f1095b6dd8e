"""The CPU watch end to end: a real `phoenix serve` under /generatecert load, psutil, Apprise
to a webhook on loopback, events in the store; and the shell's pieces on the real host."""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Match, Mount

from cloud_phoenix.config import Settings
from cloud_phoenix.cpuwatch.context import (
    MOUNTS,
    ROUTES,
    UNMATCHED,
    busiest_endpoints,
    helper_children,
)
from cloud_phoenix.cpuwatch.decide import CpuPolicy, CpuSample, started_notice
from cloud_phoenix.cpuwatch.watch import CpuWatch, HostCpu, ProcessTable
from cloud_phoenix.journal import AccessRecord, file_name, format_time
from cloud_phoenix.notify.channel import RetryPolicy
from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.notify.notifier import Notifier
from cloud_phoenix.stack.workerapp import worker_app
from cloud_phoenix.store import open_store
from tests.fixtures.server import PhoenixProcess, start_phoenix
from tests.fixtures.waiting import eventually
from tests.fixtures.webhook import Receiver

pytestmark = pytest.mark.integration

SERVE = "phoenix serve"
RETRY = RetryPolicy(first_delay=0.1, max_delay=1.0, max_attempts=5)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[PhoenixProcess]:
    server = start_phoenix(tmp_path / "home")
    try:
        yield server
    finally:
        server.stop()


def host_cpu_over(seconds: float) -> float:
    """The host's CPU percent averaged over the next `seconds`."""
    cpu = HostCpu()
    time.sleep(seconds)  # the span measured, on purpose
    return cpu.read()


def skip_if_host_busy(limit: float, patience: float = 60.0) -> None:
    # Another run (a benchmark, another suite) on this small machine would make peaks
    # that are not ours: wait a while for it to pass, then give up rather than measure it.
    deadline = time.monotonic() + patience
    while (baseline := host_cpu_over(2.0)) >= limit:
        if time.monotonic() > deadline:
            pytest.skip(f"host CPU stayed at {baseline:.0f} %: too busy to measure peaks")


def skip_if_someone_else_ran_hot(extra: list[dict[str, Any]]) -> None:
    """Extra notices after ours are inconclusive if what ran hot was outside the stack."""

    def hottest(notice: dict[str, Any]) -> str:
        lines = str(notice["message"]).splitlines()
        return next((line for line in lines if line.startswith("  ")), "")

    if extra and all(SERVE not in hottest(notice) for notice in extra):
        pytest.skip(f"a process outside the stack made more peaks: {extra[0]['message']}")


def generate_certs(url: str, until: float) -> None:
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < until:
            with contextlib.suppress(httpx.HTTPError):
                client.get(url + "/generatecert", params={"cn": "peak.test"})


def test_a_generatecert_load_gives_one_start_and_one_end_notice(
    serve: PhoenixProcess, receiver: Receiver
) -> None:
    skip_if_host_busy(40.0)
    store = open_store(f"sqlite:///{serve.home / 'db' / 'phoenix.sqlite3'}")
    notifier = Notifier([receiver.url()], store.add_event, retry=RETRY)
    # Two cores: RSA generation in serve's key maker (two threads) holds the host near 100 %.
    policy = CpuPolicy(threshold=70.0, peak_seconds=2.0, interval=0.5)
    watch = CpuWatch(
        policy,
        notifier,
        stack_pids=lambda: {SERVE: serve.process.pid},
        endpoints=lambda since: busiest_endpoints(serve.home / "journal", since),
        workers=lambda: 1,
    )
    stop = threading.Event()
    sampler = threading.Thread(target=watch.run, args=(stop,), daemon=True)
    sampler.start()
    try:
        eventually(lambda: watch.samples >= 2, what="two samples before the load")
        assert receiver.requests == []
        until = time.monotonic() + 6.0
        clients = [
            threading.Thread(target=generate_certs, args=(serve.url, until), daemon=True)
            for _ in range(4)
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(40)
        # The end needs 2 s under the threshold after the load, then the delivery.
        assert receiver.wait_for(2, timeout=30), f"notices: {receiver.requests}"
        time.sleep(3.0)  # time passes on purpose: nothing more may follow
    finally:
        stop.set()
        sampler.join(5)
        notifier.close(5)
    assert not sampler.is_alive()
    delivered = receiver.delivered
    skip_if_someone_else_ran_hot(delivered[2:])
    assert [p["type"] for p in delivered] == ["warning", "info"], delivered
    start, end = delivered
    assert start["title"].startswith("CPU peak") and "threshold 70 %" in start["title"]
    assert f"{SERVE} (pid {serve.process.pid}):" in start["message"]
    assert "/generatecert: " in start["message"]
    assert "Workers: 1" in start["message"]
    assert end["title"].startswith("CPU peak ended")
    assert watch.peaks == 1 and watch.errors == 0 and not watch.in_peak
    assert (notifier.sent, notifier.failed) == (2, 0)

    events = {e.kind: e for e in store.events(limit=10) if e.kind.startswith("cpu_peak")}
    store.close()
    started, ended = events["cpu_peak_started"], events["cpu_peak_ended"]
    top = started.data["processes"]
    # The certificates' CPU is the stack's: serve's own and its key maker child's.
    serving = [p for p in top if p["name"].startswith(SERVE) and p["stack"]]
    assert f"{SERVE}: key maker" in {p["name"] for p in serving}, top
    assert sum(p["percent"] for p in serving) >= 25.0, top  # at least half a core of two
    assert started.data["endpoints"][0]["path"] == "/generatecert"
    assert started.data["host_percent"] >= 70.0
    assert 2.0 <= ended.data["duration_seconds"] <= 12.0
    assert ended.data["max_percent"] >= started.data["host_percent"]
    assert any(p["name"] == SERVE for p in ended.data["processes"])


def test_an_idle_host_gives_no_notice(serve: PhoenixProcess, receiver: Receiver) -> None:
    # Ten seconds, not the full minute: the test's time stays bounded, and the long
    # idle traces are the pure tests' job (an idle hour in test_cpuwatch). This checks that
    # the real sampler, at 95 %, does not see peaks in an idle stack.
    skip_if_host_busy(60.0)
    notifier = Notifier([receiver.url()], retry=RETRY)
    policy = CpuPolicy(threshold=95.0, peak_seconds=2.0, interval=0.5)
    watch = CpuWatch(policy, notifier, stack_pids=lambda: {SERVE: serve.process.pid})
    highest, notices = 0.0, list[Notice]()
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            notices += watch.tick()
            assert watch.last_sample is not None
            highest = max(highest, watch.last_sample.host_percent)
            time.sleep(policy.interval)  # the sampler's pace, as its own loop keeps it
    finally:
        notifier.close(5)
    if highest >= policy.threshold:
        pytest.skip(f"something else drove the host to {highest:.0f} % during the test")
    assert notices == [] and receiver.requests == []
    assert watch.samples >= 15 and watch.peaks == 0 and watch.errors == 0


# -- the shell's pieces on the real host --------------------------------------------------


def burn(seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sum(i * i for i in range(1000))


def test_host_and_process_cpu_come_from_real_readings() -> None:
    cpu, table = HostCpu(), ProcessTable()
    assert table.percent(os.getpid()) == 0.0  # psutil's first reading of a process
    burn(0.3)
    busy = table.percent(os.getpid())
    assert busy is not None and busy > 10.0  # one core of this machine's cores, in host %
    host = cpu.read()
    assert 0.0 <= host <= 100.0
    again = cpu.read()  # read once: a second read right after may find no time passed
    assert math.isnan(again) or 0.0 <= again <= 100.0
    assert table.percent(2**22 + 12345) is None  # no such process


def test_tick_logs_and_counts_errors_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    sent: list[Notice] = []

    class Sink:
        def send(self, notice: Notice) -> None:
            sent.append(notice)
            raise RuntimeError("sink broken")

    def no_pids() -> dict[str, int]:
        raise OSError("status file unreadable")

    def no_endpoints(since: float) -> tuple[tuple[str, int], ...]:
        raise OSError("journal gone")

    # Threshold 1 %: every sample is high, so endpoints are asked for and a peak starts.
    watch = CpuWatch(
        CpuPolicy(threshold=1.0, peak_seconds=0.0),
        Sink(),
        stack_pids=no_pids,
        endpoints=no_endpoints,
        workers=lambda: 1 // 0,
    )
    burn(0.2)
    watch.tick()
    assert watch.samples == 1
    assert [n.kind for n in sent] == ["cpu_peak_started"]
    assert watch.errors == 4  # pids, endpoints, workers, the sink
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "status file unreadable" in messages and "journal gone" in messages


def test_tick_names_each_worker_even_when_names_repeat() -> None:
    notices: list[Notice] = []

    class Sink:
        def send(self, notice: Notice) -> None:
            notices.append(notice)

    # Not the parent of pytest as a second worker: its other children (a pipe's reader when
    # run as `pytest | tail`) would be counted as its helpers.
    with subprocess.Popen(["sleep", "30"]) as other:
        pairs = [("worker", os.getpid()), ("worker", other.pid), ("gone", 2**22 + 12345)]
        policy = CpuPolicy(threshold=1.0, peak_seconds=0.0)
        watch = CpuWatch(policy, Sink(), stack_pids=lambda: pairs)
        watch.tick()
        burn(0.3)
        watch.tick()
        other.kill()
    assert watch.last_sample is not None
    # pytest's own children (a Docker Engine of the container tier, say) count as this
    # "worker's" helpers, named after it ("worker: dockerd"): only the workers are asserted.
    workers = [p for p in watch.last_sample.processes if p.stack and p.name == "worker"]
    assert sorted(p.pid for p in workers) == sorted([os.getpid(), other.pid])
    # CPU was high: processes outside the stack were looked at too.
    assert all(
        p.pid not in {os.getpid(), other.pid} for p in watch.last_sample.processes if not p.stack
    )


def write_journal(path: Path, records: list[tuple[float, str]], tail: bytes = b"") -> None:
    lines = []
    for epoch, route in records:
        moment = format_time(datetime.fromtimestamp(epoch, UTC))
        lines.append(
            AccessRecord(
                moment, "GET", route, "", 200, 10, 1.0, "127.0.0.1", "t", "", "w", "r"
            ).to_line()
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(b"".join(lines) + tail)


def test_busiest_endpoints_counts_recent_paths_from_the_journal_tail(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    now = 1_700_000_000.0
    today = journal / file_name(datetime.fromtimestamp(now, UTC))
    old = [(now - 3600, "/old")] * 3000  # ~600 KB: beyond the tail that is read
    recent = [(now - 5, "/generatecert")] * 7 + [(now - 4, "/health")] * 2 + [(now - 1, "/")] * 2
    write_journal(today, old + recent, tail=b'not json\n{"time": "partial')
    assert today.stat().st_size > 2 * (256 << 10)
    assert busiest_endpoints(journal, now - 10) == (("/generatecert", 7), ("/", 2), ("/health", 2))
    assert busiest_endpoints(journal, now - 10, limit=1) == (("/generatecert", 7),)
    assert busiest_endpoints(journal, now + 1) == ()
    assert busiest_endpoints(tmp_path / "missing", now) == ()


def test_busiest_endpoints_reads_across_midnight(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    midnight = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    write_journal(
        journal / file_name(datetime.fromtimestamp(midnight - 1, UTC)),
        [(midnight - 3, "/logs"), (midnight - 2, "/ready")],
    )
    write_journal(
        journal / file_name(datetime.fromtimestamp(midnight, UTC)), [(midnight + 1, "/logs")]
    )
    assert busiest_endpoints(journal, midnight - 2.5) == (("/logs", 1), ("/ready", 1))
    assert busiest_endpoints(journal, midnight - 5) == (("/logs", 2), ("/ready", 1))


PHISHING = "/x\nACTION REQUIRED: log in at https://phish.example/reset\n"


def test_a_notice_names_the_application_s_routes_never_a_path_a_client_chose(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "journal"
    now = 1_700_000_000.0
    recent = (
        [(now - 3, PHISHING)] * 9
        + [(now - 3, "/admin/delete-all")] * 2
        + [(now - 2, "/generatecert")] * 5
        + [(now - 2, "/static/app.js"), (now - 2, "/static/x\ny.css")]
        + [(now - 1, "/logs/"), (now - 1, "/LOGS"), (now - 1, "/logs")]
    )
    write_journal(journal / file_name(datetime.fromtimestamp(now, UTC)), recent)
    busiest = busiest_endpoints(journal, now - 10, limit=10)
    assert busiest == (
        (UNMATCHED, 13),
        ("/generatecert", 5),
        ("/static", 2),
        ("/logs", 1),
    )
    notice = started_notice(CpuSample(1.0, 99.0, (), busiest), 3.0, CpuPolicy())
    assert "phish" not in notice.body and "ACTION" not in notice.body
    assert "admin" not in notice.body and "/static/" not in notice.body
    assert f"  {UNMATCHED}: 13\n" in notice.body


def app_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route of the application, through FastAPI's wrappers of included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)  # app.include_router(router)
        yield from app_routes(included.routes) if included is not None else (route,)


def test_the_route_labels_are_the_application_s_route_table(tmp_path: Path) -> None:
    """The supervisor does not import the application (FastAPI, some 30 MB): it keeps the
    table's paths, and this test keeps them equal to the application's."""
    app = worker_app(Settings.from_env({"PHOENIX_HOME": str(tmp_path)}))
    try:
        routes = list(app_routes(app.routes))
        paths = {getattr(route, "path", None) for route in routes}
        mounts = {route.path for route in routes if isinstance(route, Mount)}
        assert (paths - mounts, mounts) == (set(ROUTES), set(MOUNTS))
        assert UNMATCHED not in paths

        def matched(path: str) -> bool:
            scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
            return any(route.matches(scope)[0] != Match.NONE for route in app.routes)

        # And the application answers each of them there (no router prefix in between).
        assert all(matched(path) for path in ROUTES)
        assert all(matched(f"{mount}/app.js") for mount in MOUNTS)
        assert not matched("/admin/delete-all") and not matched("/logs/")
    finally:
        app.state.runtime.store.close()


def test_a_stack_process_children_are_named_after_it() -> None:
    """A worker's key maker and any other child count as the stack's, named by their parent;
    a named child keeps its own name."""
    sleeper = subprocess.Popen(["sleep", "30"])
    keymaker = subprocess.Popen(
        # THREADS PARENT_PID TICK_MICROSECONDS: with the wrong count it would exit at once,
        # and the check below would race its exit.
        [sys.executable, "-m", "cloud_phoenix.certs.keymaker", "1", str(os.getpid()), "0"],
        stdin=subprocess.PIPE,
    )
    try:
        me = ("tester", os.getpid())
        wanted = {("tester: sleep", sleeper.pid), ("tester: key maker", keymaker.pid)}

        def named() -> list[tuple[str, int]] | None:
            # Until each child has exec'd its program, /proc names it "?".
            found = helper_children([me])
            return found if wanted <= set(found) else None

        found = eventually(named, what="both children named")
        assert ("tester: sleep", sleeper.pid) in found
        assert all(pid != sleeper.pid for _, pid in helper_children([me, ("nap", sleeper.pid)]))
        assert helper_children([("gone", 2**22 + 1)]) == []
    finally:
        for process in (sleeper, keymaker):
            process.kill()
            process.wait()
