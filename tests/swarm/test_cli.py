"""`scripts/swarm` and `phoenix drill swarm` refuse what cannot work before they make
anything, with a clear message and their own exit code. No Docker needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_phoenix import exitcodes

pytestmark = pytest.mark.integration


def swarm(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "PHOENIX_"))}
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix.swarm", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_up_on_a_taken_port_makes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = swarm("up", f"--state={state}", PORT=str(taken.getsockname()[1]))
    assert result.returncode == exitcodes.TEMPFAIL, result.stderr
    assert "set PORT to a free port" in result.stderr
    assert result.stdout == "" and not state.exists()


def test_up_refuses_a_database_that_is_not_postgresql(tmp_path: Path) -> None:
    result = swarm("up", f"--state={tmp_path}", DB_CONNECTION_STRING="sqlite:///x.db")
    assert result.returncode == exitcodes.CONFIG
    assert "PostgreSQL URL" in result.stderr and "Traceback" not in result.stderr


def test_down_with_nothing_made_is_a_no_op(tmp_path: Path) -> None:
    result = swarm("down", f"--state={tmp_path / 'none'}")
    assert result.returncode == 0, result.stderr
    assert "nothing left" in result.stderr


def test_a_cluster_drill_without_a_stack_says_how_to_make_one(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", "drill", "swarm", "crash", f"--state={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exitcodes.UNAVAILABLE
    assert "scripts/swarm up" in result.stderr


def test_up_twice_on_one_state_folder_is_refused(tmp_path: Path) -> None:
    from cloud_phoenix.swarm.up import SwarmState, save_state

    save_state(tmp_path, SwarmState(stack="phoenix", port=18080))
    result = swarm("up", f"--state={tmp_path}")
    assert result.returncode == exitcodes.TEMPFAIL
    assert "http://127.0.0.1:18080" in result.stderr and "scripts/swarm down" in result.stderr
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_an_offline_build_without_a_ca_bundle_is_refused_first(tmp_path: Path) -> None:
    result = swarm("up", "--offline", f"--state={tmp_path / 'state'}")
    assert result.returncode == exitcodes.USAGE
    assert "--rds-ca-bundle" in result.stderr and not (tmp_path / "state").exists()
