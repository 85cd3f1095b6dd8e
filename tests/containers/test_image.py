"""The image's contract, run in a real Docker Engine: the image built from the repository's
Dockerfile (offline here), as users build it.

The default command is `phoenix up`: the edge, the workers and the collector in the
container, so that /crash ends a worker and never the container. Each container runs with
`--network host` on a loopback address of its own, the root file system read-only, as the
image's user.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import DockerCli
from cloud_phoenix.containers.image import BuildResult
from cloud_phoenix.drill.drills import stored_ids
from cloud_phoenix.drill.loadgen import Injector, Phase, drive
from cloud_phoenix.drill.stats import summarize
from cloud_phoenix.journal import AccessRecord, JournalWriter, format_time
from cloud_phoenix.stack.status import read_status
from cloud_phoenix.store import LogQuery, open_store
from tests.fixtures.containers import (
    PHOENIX_UID,
    Server,
    answers,
    inspect,
    phoenix_home,
    run_detached,
    server_address,
)
from tests.fixtures.waiting import eventually

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]

CA_PATH = "/etc/ssl/certs/rds-global-bundle.pem"
# What the templates in deploy/aws hand a task for DocumentDB (database.yaml), password aside.
DOCUMENTDB_URL = (
    "mongodb://phoenix:hunter2@docdb.cluster.example:27017/phoenix?tls=true"
    f"&tlsCAFile={CA_PATH}&replicaSet=rs0&readPreference=primary&retryWrites=false"
    "&authSource=admin"
)
READ_ONLY = ("--read-only", "--tmpfs=/tmp")
# The crash storm: GET / at STORM_RPS for STORM_SECONDS, a /crash every CRASH_EVERY s.
STORM_SECONDS, STORM_RPS, CRASH_EVERY = 10, 100, 0.25


@pytest.fixture(scope="module")
def served(image: BuildResult, docker: DockerCli) -> Iterator[Server]:
    """The image's default command (`phoenix up`) as an orchestrator runs it: read-only root,
    state on a named volume, on 127.0.1.N; healthy by the image's own HEALTHCHECK (at its
    own interval)."""
    host, port = server_address()
    volume = docker.run("volume", "create").stdout.strip()
    cid = docker.run(
        "run",
        "--detach",
        "--network=host",
        *READ_ONLY,
        f"--volume={volume}:/var/lib/phoenix",
        f"--env=PHOENIX_HOST={host}",
        f"--env=PORT={port}",
        image.tag,
    ).stdout.strip()
    try:
        eventually(
            lambda: inspect(docker, cid, "{{.State.Health.Status}}") == "healthy",
            90,
            what="the container's HEALTHCHECK to pass",
            interval=0.5,  # each look is a `docker inspect`
        )
        yield Server(cid, host, port)
    finally:
        docker.run("rm", "--force", "--volumes", cid, check=False)
        docker.run("volume", "rm", "--force", volume, check=False)


def exec_in(docker: DockerCli, server: Server, *command: str) -> str:
    return docker.run("exec", server.container, *command).stdout


def test_the_healthcheck_turns_healthy_probing_the_address_the_server_listens_on(
    served: Server,
) -> None:
    assert answers(f"{served.url}/health")
    # What answers on PORT is the container's own edge, in front of its workers.
    edge = httpx.get(f"{served.url}/health", timeout=5).headers["X-Served-By"]
    assert edge.startswith("phoenix-edge-")
    # Nothing on 127.0.0.1: a check that probed it (the image's old one) never passed.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()


def processes(docker: DockerCli, server: Server) -> dict[int, tuple[str, str, list[str]]]:
    """pid -> (name, state letter, real/effective/saved/fs uids) of every process in it."""
    script = (
        'for p in /proc/[0-9]*; do printf "%s " "${p#/proc/}"; '
        'grep -E "^(Name|State|Uid):" "$p/status" | tr "\\n" " "; echo; done'
    )
    found = {}
    for line in exec_in(docker, server, "sh", "-c", script).splitlines():
        words = line.split()
        if len(words) < 9:
            continue  # gone while the shell read it (its own grep, say)
        found[int(words[0])] = (words[2], words[4], words[-4:])
    return found


def test_every_process_runs_as_uid_10001_on_a_read_only_root_with_state_on_the_volume(
    served: Server, docker: DockerCli
) -> None:
    assert inspect(docker, served.container, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    running = processes(docker, served)
    names = {name for name, _state, _uids in running.values()}
    assert {"tini", "phoenix", "haproxy", "python3"} <= names, running
    for pid, (name, _state, uids) in running.items():
        assert uids == [str(PHOENIX_UID)] * 4, (pid, name, uids)
    refused = docker.run("exec", served.container, "touch", "/opt/venv/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    httpx.get(f"{served.url}/health", headers={"X-Request-ID": "on-the-volume"})
    journal = exec_in(docker, served, "sh", "-c", "cat /var/lib/phoenix/journal/*.jsonl")
    assert '"on-the-volume"' in journal


def test_what_a_crashed_worker_leaves_behind_is_reaped(served: Server, docker: DockerCli) -> None:
    # A worker that made a certificate has a key maker child; /crash orphans it, and
    # process 1 must reap it once it dies with its parent, or zombies pile up crash by crash.
    for _round in range(8):
        assert httpx.get(f"{served.url}/generatecert", timeout=30).status_code == 200
        # 502: its worker died answering it. A connection of its own: on a kept one the
        # edge closes the connection instead, and a client may then send /crash again.
        assert httpx.get(f"{served.url}/crash", timeout=30).status_code == 502
    eventually(
        lambda: all(state != "Z" for _name, state, _uids in processes(docker, served).values()),
        10,
        what="no zombie process in the container",
    )
    assert answers(f"{served.url}/health")


def test_the_rds_ca_bundle_reaches_the_container(
    served: Server, docker: DockerCli, rds_ca_bundle: Path
) -> None:
    # Read as the image's user, byte for byte the file the build was given.
    digest = exec_in(docker, served, "sha256sum", CA_PATH).split()[0]
    assert digest == hashlib.sha256(rds_ca_bundle.read_bytes()).hexdigest()
    # The connection string of the DocumentDB templates builds a client with it.
    check = f"from cloud_phoenix.store.mongodb import MongoStore; MongoStore({DOCUMENTDB_URL!r})"
    exec_in(docker, served, "python", "-c", check)


def test_haproxy_is_in_the_image(served: Server, docker: DockerCli) -> None:
    assert "HAProxy version" in exec_in(docker, served, "haproxy", "-v")


def test_a_missing_ca_file_exits_78_with_a_message_not_a_traceback(
    image: BuildResult, docker: DockerCli, containers: list[str]
) -> None:
    host, port = server_address()
    url = DOCUMENTDB_URL.replace(CA_PATH, "/etc/ssl/certs/not-there.pem")
    cid = run_detached(
        docker,
        containers,
        *READ_ONLY,
        "--tmpfs=/var/lib/phoenix:uid=10001,gid=10001",
        f"--env=DB_CONNECTION_STRING={url}",
        f"--env=PHOENIX_HOST={host}",
        f"--env=PORT={port}",
        image.tag,
    )
    code = docker.run("wait", cid, timeout=60).stdout.strip()
    logs = docker.run("logs", cid)
    output = logs.stdout + logs.stderr
    assert code == str(exitcodes.CONFIG), output
    assert "tlsCAFile=/etc/ssl/certs/not-there.pem" in output
    assert "Traceback" not in output and "hunter2" not in output


def test_sigterm_exits_0_with_every_record_collected(
    image: BuildResult, docker: DockerCli, containers: list[str], tmp_path: Path
) -> None:
    home = phoenix_home(tmp_path / "home")
    host, port = server_address()
    cid = run_detached(
        docker,
        containers,
        *READ_ONLY,
        f"--volume={home}:/var/lib/phoenix",
        f"--env=PHOENIX_HOST={host}",
        f"--env=PORT={port}",
        "--env=PHOENIX_COLLECT_INTERVAL=5",  # the last records wait for the final pass
        image.tag,
    )
    base = f"http://{host}:{port}"
    eventually(lambda: answers(f"{base}/health"), 60, what="phoenix up to answer")
    sent = [f"term-{n}" for n in range(40)]
    with httpx.Client(base_url=base, timeout=10) as client:
        for request_id in sent[:20]:
            assert client.get("/health", headers={"X-Request-ID": request_id}).is_success

        def collecting() -> bool:  # the collector child runs (it may start slowly)
            return bool(client.get("/checkdb").json()["records"])

        eventually(collecting, 60, what="the collector to commit its first records")
        for request_id in sent[20:]:
            assert client.get("/health", headers={"X-Request-ID": request_id}).is_success
    docker.run("stop", "--time=30", cid, timeout=60)
    assert inspect(docker, cid, "{{.State.ExitCode}}") == "0", docker.run("logs", cid).stderr
    journal = [
        json.loads(line)["request_id"]
        for path in sorted((home / "journal").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]
    store = open_store(f"sqlite:///{home}/db/phoenix.sqlite3")
    try:
        stored = [row.record.request_id for row in store.query(LogQuery(limit=1000))]
    finally:
        store.close()
    assert set(sent) <= set(journal)
    assert sorted(stored) == sorted(journal)  # every line once, none twice


def test_a_crash_storm_fails_no_request_and_never_takes_the_container_down(
    image: BuildResult, docker: DockerCli, containers: list[str], tmp_path: Path
) -> None:
    home = phoenix_home(tmp_path / "home")
    host, port = server_address()
    cid = run_detached(
        docker,
        containers,
        *READ_ONLY,
        "--restart=unless-stopped",  # as an orchestrator would: an exit would show as a restart
        f"--volume={home}:/var/lib/phoenix",
        f"--env=PHOENIX_HOST={host}",
        f"--env=PORT={port}",
        image.tag,
    )
    server = Server(cid, host, port)
    eventually(lambda: answers(f"{server.url}/ready"), 60, what="phoenix up to be ready")
    started = inspect(docker, cid, "{{.State.StartedAt}}")
    since = format_time(datetime.now(UTC) - timedelta(seconds=1))
    # Through the container's own edge, as a load balancer in front of it would send it.
    storm = drive(
        server.url,
        [Phase(STORM_SECONDS, STORM_RPS, ("/",))],
        Injector("/crash", CRASH_EVERY, STORM_SECONDS),
        request_id_prefix="storm",
    )
    summary = summarize(storm.load)
    failed = [(f.request_id, f.reason) for f in summary.failed[:10]]
    assert summary.sent == STORM_SECONDS * STORM_RPS and not summary.failed, (
        f"{summary.line()}; first failed: {failed}"
    )
    status = read_status(home / "run")
    assert status is not None
    # Workers did die (the supervisor counts them): the storm reached them.
    assert status.restarts >= len(storm.injected) // 2, f"only {status.restarts} died"
    state = "{{.State.Status}} {{.RestartCount}} {{.State.StartedAt}}"
    assert inspect(docker, cid, state) == f"running 0 {started}"
    docker.run("stop", "--time=30", cid, timeout=60)
    assert inspect(docker, cid, "{{.State.ExitCode}}") == "0", docker.run("logs", cid).stderr
    store = open_store(f"sqlite:///{home}/db/phoenix.sqlite3")
    try:
        ids = stored_ids(store, since)
    finally:
        store.close()
    answered = {r.request_id for r in storm.load if r.status is not None}
    assert answered <= set(ids), sorted(answered - set(ids))[:10]
    assert not [rid for rid, n in ids.items() if n > 1]  # none twice


def test_collect_and_backup_run_in_the_image(
    image: BuildResult, docker: DockerCli, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    writer = JournalWriter(home / "journal")
    for n in range(25):
        writer.append(
            AccessRecord(
                time=datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                method="GET",
                path="/health",
                query="",
                status=200,
                bytes=52,
                duration_ms=1.0,
                remote_addr="127.0.0.1",
                user_agent="test",
                referrer="",
                worker="host:1",
                request_id=f"batch-{n}",
            )
        )
    writer.close()
    phoenix_home(home)

    def phoenix(*args: str) -> str:
        done = docker.run(
            "run",
            "--rm",
            "--network=host",
            *READ_ONLY,
            f"--volume={home}:/var/lib/phoenix",
            image.tag,
            *args,
            timeout=120,
        )
        return done.stdout

    assert "collected 25 records" in phoenix("collect", "--once")
    report = phoenix("backup", "--verify")
    assert "25 records" in report and "verified" in report
    manifests = list((home / "backups").glob("*.manifest.json"))
    assert len(manifests) == 1, report
