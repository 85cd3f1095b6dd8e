"""The image's contract, run in a real Docker Engine: the image built from the repository's
Dockerfile (offline here), as users build it.

Each server runs with `--network host` on a loopback address of its own, the root file
system read-only, as the image's user.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import DockerCli
from cloud_phoenix.containers.image import BuildResult
from cloud_phoenix.journal import AccessRecord, JournalWriter
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


@pytest.fixture(scope="module")
def served(image: BuildResult, docker: DockerCli) -> Iterator[Server]:
    """`phoenix serve` as the image runs it: read-only root, state on a named volume, on
    127.0.1.N; healthy by the image's own HEALTHCHECK (at its own interval)."""
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
    # Nothing on 127.0.0.1: a check that probed it (the image's old one) never passed.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()


def test_it_runs_as_uid_10001_on_a_read_only_root_with_state_on_the_volume(
    served: Server, docker: DockerCli
) -> None:
    assert inspect(docker, served.container, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    status = exec_in(docker, served, "cat", "/proc/1/status")
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(PHOENIX_UID)] * 4
    refused = docker.run("exec", served.container, "touch", "/opt/venv/x", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    httpx.get(f"{served.url}/health", headers={"X-Request-ID": "on-the-volume"})
    journal = exec_in(docker, served, "sh", "-c", "cat /var/lib/phoenix/journal/*.jsonl")
    assert '"on-the-volume"' in journal


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
    eventually(lambda: answers(f"{base}/health"), 60, what="phoenix serve to answer")
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
