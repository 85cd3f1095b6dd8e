"""`phoenix serve` and `phoenix collect` as a user runs them: real processes, loopback only."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cloud_phoenix.exitcodes import CANTCREAT as EXIT_CANTCREAT
from cloud_phoenix.exitcodes import CONFIG as EXIT_CONFIG
from cloud_phoenix.exitcodes import TEMPFAIL as EXIT_TEMPFAIL
from cloud_phoenix.store import LogQuery, open_store
from tests.fixtures.ports import free_port
from tests.fixtures.server import PhoenixProcess, start_phoenix
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration


def run_phoenix(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port_is_a_clear_error_with_its_own_exit_code(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_phoenix("serve", PHOENIX_HOME=str(tmp_path), PORT=str(port))
    assert result.returncode == EXIT_TEMPFAIL
    assert f"127.0.0.1:{port}" in result.stderr and "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_reuse_port_lets_serve_share_its_port_and_is_opt_in(tmp_path: Path) -> None:
    with socket.socket() as holder:
        # Bound with SO_REUSEPORT but not listening: it holds the port and takes no connection.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        port = str(holder.getsockname()[1])
        refused = run_phoenix("serve", PHOENIX_HOME=str(tmp_path / "other"), PORT=port)
        assert refused.returncode == EXIT_TEMPFAIL, refused.stderr
        server = start_phoenix(tmp_path / "home", env={"PORT": port, "PHOENIX_REUSE_PORT": "1"})
        try:
            assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        finally:
            assert server.stop() == 0


def test_invalid_configuration_stops_with_the_variable_named(tmp_path: Path) -> None:
    result = run_phoenix("serve", PHOENIX_HOME=str(tmp_path), PORT="eighty")
    assert result.returncode == EXIT_CONFIG
    assert "PORT='eighty'" in result.stderr


def test_an_unwritable_home_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("a file, not a folder")
    result = run_phoenix("serve", PHOENIX_HOME=str(blocker), PORT=str(free_port()))
    assert result.returncode == EXIT_CANTCREAT
    assert "PHOENIX_HOME is not writable" in result.stderr


def test_sigterm_exits_cleanly_after_collecting_everything(tmp_path: Path) -> None:
    server = start_phoenix(tmp_path / "home", env={"PHOENIX_COLLECT_INTERVAL": "5"})
    with httpx.Client(base_url=server.url) as client:
        for n in range(40):
            client.get("/health", headers={"X-Request-ID": f"term-{n}"})
    assert server.stop() == 0
    store = open_store(f"sqlite:///{server.home}/db/phoenix.sqlite3")
    try:
        assert store.count() >= 40  # the final flush ran although the interval is 5 s
    finally:
        store.close()


def test_serve_and_its_collector_read_the_database_url_from_a_secret_file(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere.sqlite3"
    secret = tmp_path / "phoenix_db_url"
    secret.write_text(f"sqlite:///{database}\n")
    server = start_phoenix(tmp_path / "home", env={"DB_CONNECTION_STRING_FILE": str(secret)})
    try:
        httpx.get(f"{server.url}/health", headers={"X-Request-ID": "from-a-secret"}, timeout=5)
        deadline = time.monotonic() + 20
        while True:  # collected while serving: the collector child reads the same URL
            store = open_store(f"sqlite:///{database}")
            try:
                ids = [row.record.request_id for row in store.query(LogQuery())]
            finally:
                store.close()
            if "from-a-secret" in ids:
                break
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.2)
    finally:
        assert server.stop() == 0


def test_collect_once_reports_a_down_database_without_losing_anything(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "access-2026-11-27.jsonl").write_text("")
    result = run_phoenix(
        "collect",
        "--once",
        PHOENIX_HOME=str(tmp_path),
        DB_CONNECTION_STRING="postgresql://u:hunter2@127.0.0.1:9/x",
    )
    assert result.returncode == 69
    assert "nothing lost" in result.stderr and "hunter2" not in result.stderr


def sequential_latencies(server: PhoenixProcess, count: int = 30) -> list[float]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        times = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            data = b""
            while not data.endswith(b"}"):
                data += sock.recv(65536)
            times.append(time.perf_counter() - started)
    return times


def test_responses_are_not_held_back_by_delayed_acks(phoenix_server: PhoenixProcess) -> None:
    """Without TCP_NODELAY every keep-alive response waits for the client's delayed ACK
    (40 ms on Linux): a fixed step, far above any scheduling noise on loopback."""
    median = statistics.median(sequential_latencies(phoenix_server))
    assert median < 0.02, f"median {median * 1000:.1f} ms: is TCP_NODELAY set on the socket?"


def test_serve_does_not_name_its_server_software(phoenix_server: PhoenixProcess) -> None:
    response = httpx.get(phoenix_server.url + "/health")
    assert "server" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


def collector_children(pid: int) -> list[int]:
    """The `phoenix collect` processes whose parent is `pid`."""
    return children(pid, b"collect")


def keymaker_children(pid: int) -> list[int]:
    """The key maker processes (`python -m cloud_phoenix.certs.keymaker`) whose parent is `pid`."""
    return children(pid, b"cloud_phoenix.certs.keymaker")


def children(pid: int, argument: bytes) -> list[int]:
    """The processes whose parent is `pid` with `argument` on their command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid and argument in cmdline and any(b"cloud_phoenix" in a for a in cmdline):
            found.append(int(entry.name))
    return found


def test_the_collector_is_a_child_at_idle_priority_restarted_when_killed(tmp_path: Path) -> None:
    """Killed with -9, the collector comes back and records what was served meanwhile."""
    server = start_phoenix(tmp_path / "home", env={"PHOENIX_COLLECT_INTERVAL": "0.05"})
    try:
        eventually(
            lambda: len(collector_children(server.process.pid)) == 1, 15, what="one collector"
        )
        [first] = collector_children(server.process.pid)
        # Idle priority: it takes only CPU time the server leaves over (the journal absorbs
        # bursts), so it never slows the requests down.
        eventually(lambda: os.sched_getscheduler(first) == os.SCHED_IDLE, 15, what="SCHED_IDLE")
        os.kill(first, 9)
        with httpx.Client(base_url=server.url) as client:
            for n in range(20):
                assert client.get("/health", headers={"X-Request-ID": f"gap-{n}"}).is_success
        eventually(
            lambda: collector_children(server.process.pid) not in ([], [first]),
            15,
            what="a new collector",
        )
        store = open_store(f"sqlite:///{server.home}/db/phoenix.sqlite3")
        try:
            wanted = {f"gap-{n}" for n in range(20)}
            eventually(
                lambda: wanted <= {r.record.request_id for r in store.query(LogQuery())},
                15,
                what="the requests served meanwhile, collected",
            )
        finally:
            store.close()
    finally:
        assert server.stop() == 0


def test_the_collector_dies_with_a_killed_server(tmp_path: Path) -> None:
    """kill -9 of `phoenix serve` takes its collector along (PR_SET_PDEATHSIG): no orphan
    keeps the database open or tails a journal that a restarted server tails too."""
    server = start_phoenix(tmp_path / "home")
    eventually(lambda: len(collector_children(server.process.pid)) == 1, 15, what="one collector")
    [child] = collector_children(server.process.pid)
    server.process.kill()
    server.process.wait(10)
    eventually(
        lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 20, what="no collector"
    )


def test_certificates_go_on_when_the_key_maker_is_killed_and_it_dies_with_the_server(
    tmp_path: Path,
) -> None:
    """kill -9 of the key maker under certificate traffic: the next request starts a new
    one, and a request that was waiting meets at most a 503 with Retry-After, never a
    hang or a 500. kill -9 of the server then takes the key maker along."""
    server = start_phoenix(tmp_path / "home", env={"PHOENIX_CERT_POOL": "0"})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/generatecert").status_code == 200
        [first] = keymaker_children(server.process.pid)
        statuses = []
        for n in range(6):
            if n == 2:
                os.kill(first, signal.SIGKILL)
            response = client.get("/generatecert", params={"cn": f"host{n}.example"})
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.headers["retry-after"] == "1"
                assert "key generator" in response.json()["detail"]
        assert statuses.count(200) >= 5 and set(statuses) <= {200, 503}, statuses
        [second] = keymaker_children(server.process.pid)
        assert second != first
    server.process.kill()
    server.process.wait(10)
    eventually(
        lambda: not Path(f"/proc/{second}").exists() or _zombie(second), 20, what="no key maker"
    )
    assert "key generator" in server.log_tail(50)


def _zombie(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ctrl_c_stops_serve_and_its_collector_once(tmp_path: Path) -> None:
    """A Ctrl-C reaches the terminal's whole process group: the collector, in a session of
    its own, does not see it and is stopped by the server, not taken for a crash."""
    server = start_phoenix(tmp_path / "home", env={"PHOENIX_COLLECT_INTERVAL": "5"})
    try:
        eventually(
            lambda: len(collector_children(server.process.pid)) == 1, 15, what="one collector"
        )
        with httpx.Client(base_url=server.url) as client:
            for n in range(10):
                client.get("/health", headers={"X-Request-ID": f"int-{n}"})
        os.killpg(server.process.pid, signal.SIGINT)  # the fixture's process group
        assert server.process.wait(20) == 0
    finally:
        server.stop()
    assert "restarting" not in server.log_tail(200)
    store = open_store(f"sqlite:///{server.home}/db/phoenix.sqlite3")
    try:  # the collector's last pass ran on the way out, although the interval is 5 s
        got = {row.record.request_id for row in store.query(LogQuery())}
        assert {f"int-{n}" for n in range(10)} <= got
    finally:
        store.close()


def test_a_missing_ca_file_in_the_database_url_stops_serve_with_exit_78(tmp_path: Path) -> None:
    """DocumentDB's URL names the RDS CA bundle (tlsCAFile); without the file, serve says so
    and exits with the configuration code, so that an orchestrator does not restart it."""
    url = (
        "mongodb://phoenix:hunter2@127.0.0.1:9/phoenix?tls=true"
        f"&tlsCAFile={tmp_path}/rds-global-bundle.pem"
    )
    result = run_phoenix(
        "serve",
        PHOENIX_HOME=str(tmp_path / "home"),
        PORT=str(free_port()),
        DB_CONNECTION_STRING=url,
    )
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f"tlsCAFile={tmp_path}/rds-global-bundle.pem" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


STOP_INSTANTS = (0.0, 0.05, 0.1, 0.2, 0.5)  # seconds after serve's first answer
STOP_ROUNDS = 3


def journal_ids(home: Path) -> Counter[str]:
    """The request id of every line in the journal of `home`."""
    ids: Counter[str] = Counter()
    for path in sorted((home / "journal").glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            ids[json.loads(line)["request_id"]] += 1
    return ids


def uncollected(home: Path, journal: Counter[str]) -> str:
    """How the store of `home` differs from its journal `journal` ("" if it holds every
    line exactly once)."""
    store = open_store(f"sqlite:///{home}/db/phoenix.sqlite3")
    try:
        stored = Counter(row.record.request_id for row in store.query(LogQuery(limit=100_000)))
    finally:
        store.close()
    if stored == journal:
        return ""
    return (
        f"{sum((journal - stored).values())} of {journal.total()} journal lines not "
        f"collected, {sum((stored - journal).values())} extra in the store"
    )


def stop_at(home: Path, instant: float) -> str:
    """Start serve, send requests until `instant` s after its first answer, then SIGTERM it;
    what went wrong, or "" when it exited 0 with every journal line in the store once."""
    answered: list[str] = []
    problems: list[str] = []
    with httpx.Client(timeout=10) as client:  # made first: its TLS setup takes tens of ms
        server = start_phoenix(home, env={"PHOENIX_COLLECT_INTERVAL": "5"})
        first_answer = time.monotonic()
        try:
            while time.monotonic() - first_answer < instant:
                request_id = f"{home.name}-{len(answered)}"
                headers = {"X-Request-ID": request_id}
                client.get(server.url + "/health", headers=headers).raise_for_status()
                answered.append(request_id)
        except httpx.HTTPError as exc:
            problems.append(f"request {len(answered)} failed: {exc!r}\n{server.log_tail(30)}")
        finally:
            code = server.stop()
    if code != 0:
        problems.append(f"exit code {code}\n{server.log_tail(30)}")
    journal = journal_ids(home)
    if not set(answered) <= set(journal):
        problems.append(f"{len(set(answered) - set(journal))} answered requests not journaled")
    if missed := uncollected(home, journal):
        problems.append(missed)
    if f"collector exited with {-signal.SIGTERM}" in server.log_tail(200):
        problems.append("the collector child died of the stop before its last pass")
    if not problems:
        return ""
    return f"stopped {instant * 1000:.0f} ms after the first answer: {', '.join(problems)}"


def test_a_stop_at_any_instant_after_start_collects_every_journal_line(tmp_path: Path) -> None:
    """SIGTERM soon after the first answer, while the collector child may still be
    importing: serve exits 0 only once every journal line is in the store, exactly once.
    The five instants run side by side, which also slows every start as a cold machine
    does; a few rounds catch a race that one run may miss."""
    failures: list[str] = []
    with ThreadPoolExecutor(len(STOP_INSTANTS)) as pool:
        for round_ in range(STOP_ROUNDS):
            homes = [tmp_path / f"r{round_}-{instant * 1000:.0f}ms" for instant in STOP_INSTANTS]
            failures += [f for f in pool.map(stop_at, homes, STOP_INSTANTS) if f]
    assert not failures, "\n".join(failures)


def test_a_stop_while_the_collector_waits_to_be_restarted_collects_everything(
    tmp_path: Path,
) -> None:
    """Killed five times in a row, the collector is restarted two seconds later at the
    earliest; serve stopped meanwhile has no child to make the last pass, and makes it."""
    server = start_phoenix(tmp_path / "home", env={"PHOENIX_COLLECT_INTERVAL": "5"})
    try:
        killed: list[int] = []
        for _ in range(5):
            eventually(
                lambda: collector_children(server.process.pid) not in ([], killed[-1:]),
                15,
                what="a new collector",
            )
            [child] = collector_children(server.process.pid)
            os.kill(child, signal.SIGKILL)
            killed.append(child)
            eventually(  # reaped by its keeper
                lambda: not Path(f"/proc/{killed[-1]}").exists(), 15, what="the killed one reaped"
            )
        with httpx.Client(base_url=server.url) as client:
            for n in range(10):
                client.get("/health", headers={"X-Request-ID": f"gap-{n}"}).raise_for_status()
    finally:
        assert server.stop() == 0
    journal = journal_ids(server.home)
    assert {f"gap-{n}" for n in range(10)} <= set(journal)
    assert not uncollected(server.home, journal)
    assert "collecting what it left" in server.log_tail(100)
