"""`phoenix up` refuses to start, clearly and with its own exit code, and never loops."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cloud_phoenix import exitcodes
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration


def up(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", "up"],
        env={**os.environ, "PHOENIX_HOME": str(home), "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = up(tmp_path, PORT=str(taken.getsockname()[1]))
    assert result.returncode == exitcodes.TEMPFAIL
    assert "Set PORT to a free port" in result.stderr and "Traceback" not in result.stderr


def test_haproxy_missing_says_how_to_install_it(tmp_path: Path) -> None:
    result = up(tmp_path, PHOENIX_HAPROXY=str(tmp_path / "no-haproxy-here"))
    assert result.returncode == exitcodes.UNAVAILABLE
    assert "apt-get install haproxy" in result.stderr


def test_an_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("not a folder")
    result = up(blocker)
    assert result.returncode == exitcodes.CANTCREAT
    assert "PHOENIX_HOME is not writable" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PHOENIX_MIN_WORKERS", "0"),
        ("PHOENIX_SCALE_RPS", "lots"),
        ("PORT", "-1"),
        ("DB_CONNECTION_STRING", "oracle-please"),
    ],
)
def test_invalid_configuration(tmp_path: Path, name: str, value: str) -> None:
    result = up(tmp_path, **{name: value})
    assert result.returncode == exitcodes.CONFIG
    assert name in result.stderr or "DB_CONNECTION_STRING" in result.stderr


def test_a_second_stack_on_the_same_home_is_refused(tmp_path: Path) -> None:
    from tests.fixtures.server import running_stack

    with running_stack(tmp_path / "home") as stack:
        result = up(stack.home)
        assert stack.process.poll() is None  # the first one is untouched
    assert result.returncode == exitcodes.TEMPFAIL
    assert f"pid {stack.process.pid}" in result.stderr
    assert "its own PHOENIX_HOME" in result.stderr


def test_a_missing_ca_file_in_the_database_url(tmp_path: Path) -> None:
    missing = tmp_path / "rds-global-bundle.pem"
    url = f"mongodb://phoenix:hunter2@127.0.0.1:9/phoenix?tls=true&tlsCAFile={missing}"
    result = up(tmp_path / "home", DB_CONNECTION_STRING=url)
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert f"tlsCAFile={missing}" in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_two_stacks_with_reuse_port_share_a_port_and_one_carries_on_alone(tmp_path: Path) -> None:
    from tests.fixtures.server import running_stack

    with running_stack(tmp_path / "a", PHOENIX_REUSE_PORT="true") as first:
        port = str(first.port)
        # Opt-in: a stack without it still finds the port taken, as before.
        refused = up(tmp_path / "c", PORT=port)
        assert refused.returncode == exitcodes.TEMPFAIL, refused.stderr
        with running_stack(tmp_path / "b", PHOENIX_REUSE_PORT="true", PORT=port) as second:
            # Each new connection goes to one of the two: both journal some of them.
            homes = (first.home, second.home)
            sent = 0
            deadline = time.monotonic() + 30
            while not all(journaled(home, "shared-") for home in homes):
                assert time.monotonic() < deadline and second.process.poll() is None, (
                    f"not both served in 30 s ({sent} requests):\n{second.log_tail()}"
                )
                request_id = f"shared-{sent}"
                response = httpx.get(
                    f"{first.url}/health", headers={"X-Request-ID": request_id}, timeout=5
                )
                assert response.status_code == 200
                sent += 1
            # The old one drains and goes, as a start-first rolling update ends.
            assert first.stop() == exitcodes.OK
            after = [httpx.get(f"{first.url}/health", timeout=5).status_code for _ in range(20)]
            assert after == [200] * 20
            assert second.process.poll() is None


def journaled(home: Path, prefix: str) -> bool:
    return any(
        f'"request_id":"{prefix}' in path.read_text()
        for path in (home / "journal").glob("access-*.jsonl")
    )


def test_a_database_url_and_its_file_together(tmp_path: Path) -> None:
    secret = tmp_path / "phoenix_db_url"
    secret.write_text("postgresql://phoenix:hunter2@127.0.0.1:9/phoenix\n")
    result = up(
        tmp_path / "home",
        DB_CONNECTION_STRING="postgresql://phoenix:hunter2@127.0.0.1:9/phoenix",
        DB_CONNECTION_STRING_FILE=str(secret),
    )
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert "DB_CONNECTION_STRING and DB_CONNECTION_STRING_FILE are both set" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_a_database_url_file_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "run-secrets" / "phoenix_db_url"
    result = up(tmp_path / "home", DB_CONNECTION_STRING_FILE=str(missing))
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert f"DB_CONNECTION_STRING_FILE='{missing}' cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_instance_id(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "instance-id").write_bytes(b"\x00\x00")
    result = up(home, PHOENIX_INSTANCE="volume")
    assert result.returncode == exitcodes.CONFIG, result.stderr
    assert f"{home / 'instance-id'} is damaged" in result.stderr
    assert "Traceback" not in result.stderr


def test_with_reuse_port_a_stack_whose_application_cannot_load_never_listens(
    tmp_path: Path,
) -> None:
    """A start-first update starts the new replica beside the old one on one address: the
    kernel would give the new one connections as soon as it listens, so it may listen only
    once it can serve. One whose application cannot load takes none while gunicorn fails."""
    port = free_port()
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PHOENIX_HOME": str(home),
        "PORT": str(port),
        "PHOENIX_REUSE_PORT": "true",
        "PHOENIX_WORKER_APP": "cloud_phoenix.no_such_module:app",
    }
    with open(tmp_path / "up.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloud_phoenix", "up"], env=env, stdout=log, stderr=log
        )
    tries = accepted = 0
    deadline = time.monotonic() + 60
    try:
        # Until gunicorn has failed to load the application twice.
        while gunicorn_failures(tmp_path / "up.log") < 2:
            assert process.poll() is None and time.monotonic() < deadline
            with socket.socket() as probe:
                probe.settimeout(1)
                accepted += probe.connect_ex(("127.0.0.1", port)) == 0
            tries += 1
            time.sleep(0.05)
        process.terminate()
        assert process.wait(30) == exitcodes.OK
    finally:
        process.kill()
        process.wait()
    assert tries > 10
    assert accepted == 0


def gunicorn_failures(log: Path) -> int:
    return log.read_text(errors="replace").count("gunicorn exited with")
