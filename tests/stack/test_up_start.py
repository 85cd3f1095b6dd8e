"""`phoenix up` refuses to start, clearly and with its own exit code, and never loops."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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
