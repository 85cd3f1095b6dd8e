"""How `phoenix deploy` and the supervisor talk, without a stack: a request and a result go
through their files unchanged, and a damaged or crafted file is answered with a clear error,
never taken for a deploy."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_phoenix.stack.deploy.protocol import (
    KEEP_RESULTS,
    REQUEST_SUFFIX,
    DeployFileError,
    DeployRequest,
    DeployResult,
    DeployUnanswered,
    await_result,
    deploy_dir,
    describe,
    mark_accepting,
    read_result,
    request_deploy,
    take_requests,
    write_result,
)

STARTING = DeployResult(
    "20260301T100000-abc123",
    "pending",
    phase="starting",
    app="cloud_phoenix.app:create_app",
    workers=2,
    new_master=4101,
    timeout_s=60.0,
    elapsed_s=0.0,
)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    deploy_dir(tmp_path).mkdir(mode=0o700)
    return tmp_path


@pytest.fixture
def usr2_received() -> Iterator[list[int]]:
    """This process plays the supervisor: SIGUSR2 is counted, not fatal."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, _frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGUSR2, previous)


def write_request(run_dir: Path, name: str, content: object) -> Path:
    path = deploy_dir(run_dir) / f"{name}{REQUEST_SUFFIX}"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# -- round trips ---------------------------------------------------------------------------


def test_a_request_reaches_the_supervisor_as_it_was_made(
    run_dir: Path, usr2_received: list[int]
) -> None:
    mark_accepting(run_dir, os.getpid())
    request = request_deploy(run_dir, os.getpid(), "other.module:app", 90.0)
    assert usr2_received == [signal.SIGUSR2]
    [path] = deploy_dir(run_dir).glob(f"*{REQUEST_SUFFIX}")
    assert path.stat().st_mode & 0o777 == 0o600
    assert take_requests(run_dir) == ([request], [])
    assert request == DeployRequest(request.id, "other.module:app", 90.0)
    assert take_requests(run_dir) == ([], []), "each request is taken once"


def test_a_supervisor_that_does_not_take_deploys_is_not_signalled(
    run_dir: Path, usr2_received: list[int]
) -> None:
    with pytest.raises(DeployUnanswered, match="does not take deploys"):
        request_deploy(run_dir, os.getpid(), "", 60.0)
    assert usr2_received == []
    assert list(deploy_dir(run_dir).iterdir()) == []


def test_a_result_is_read_back_as_written_and_stamped(run_dir: Path) -> None:
    write_result(run_dir, STARTING)
    path = deploy_dir(run_dir) / f"{STARTING.id}.json"
    assert path.stat().st_mode & 0o777 == 0o600
    read = read_result(run_dir, STARTING.id)
    assert read is not None and read.updated.endswith("Z")
    assert read == replace(STARTING, updated=read.updated)
    assert read_result(run_dir, "20260301T100000-ffffff") is None


def test_only_the_newest_results_are_kept(run_dir: Path) -> None:
    for n in range(KEEP_RESULTS + 3):
        write_result(run_dir, replace(STARTING, id=f"d{n:03d}", state="ok"))
        os.utime(deploy_dir(run_dir) / f"d{n:03d}.json", (n, n))  # distinct mtimes
    kept = sorted(p.stem for p in deploy_dir(run_dir).glob("*.json"))
    assert kept == [f"d{n:03d}" for n in range(3, KEEP_RESULTS + 3)]


def test_await_result_shows_each_phase_once_then_returns_the_outcome(run_dir: Path) -> None:
    request = DeployRequest(STARTING.id)
    shown: list[str] = []
    draining = replace(STARTING, phase="draining", ready_s=1.5, old_master=4001)
    outcomes = iter([STARTING, draining, replace(draining, state="ok", phase="done")])

    def progress(line: str) -> None:
        shown.append(line)
        write_result(run_dir, next(outcomes))

    write_result(run_dir, next(outcomes))
    result = await_result(run_dir, request, os.getpid(), 10.0, progress, poll=0.01)
    assert result.state == "ok" and result.old_master == 4001
    assert shown == [describe(STARTING), describe(draining)]
    assert shown == [
        "new workers starting (2 x cloud_phoenix.app:create_app, master pid 4101); waiting up "
        "to 60.0 s for /ready",
        "new workers ready after 1.5 s; draining the old ones (master pid 4001)",
    ]


def test_describe_says_how_a_deploy_ended() -> None:
    ok = replace(STARTING, state="ok", elapsed_s=3.2, ready_s=1.5, old_master=4001)
    assert describe(ok) == (
        "deployed in 3.2 s: new workers ready after 1.5 s (master pid 4101), old ones "
        "drained (master pid 4001)"
    )
    failed = replace(STARTING, state="failed", rolled_back=True, reason="ImportError: x")
    assert describe(failed) == "rolled back, the old workers serve on: ImportError: x"
    refused = DeployResult("d1", "failed", reason="the stack is stopping")
    assert describe(refused) == "failed: the stack is stopping"


# -- damaged and crafted files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{", "is not JSON"),
        ("[]", "holds no JSON object"),
        ({"id": "d1", "app": 7}, "app: Input should be a valid string"),
        ({"id": "d1", "timeout": "60"}, "timeout: Input should be a valid number"),
        ({"id": "d1", "timeout": True}, "timeout: Input should be a valid number"),
        ('{"id": "d1", "timeout": Infinity}', "is not JSON: Infinity"),
        ({"app": ""}, "id: Field required"),
        ({"id": "d1", "version": 2}, "format version 2; this phoenix reads version 1"),
        ({"id": "someone-else"}, "its id 'someone-else' is not its file's"),
        ({"id": "d1", "app": " x:app"}, "invalid request: app ' x:app'"),
        ({"id": "d1", "timeout": 0.5}, "timeout 0.5 s is out of range (1-3600)"),
    ],
)
def test_a_malformed_request_is_refused_with_the_reason(
    run_dir: Path, content: object, reason: str
) -> None:
    path = write_request(run_dir, "d1", content)
    taken, refused = take_requests(run_dir)
    assert taken == []
    [(request_id, why)] = refused
    assert request_id == "d1" and reason in why, why
    assert not path.exists()


def test_a_request_whose_name_is_no_id_is_dropped_unanswered(run_dir: Path) -> None:
    """Its result would be named after it: nothing is written for it, not even a refusal."""
    path = write_request(run_dir, "not an id", {"id": "not an id"})
    assert take_requests(run_dir) == ([], [])
    assert not path.exists()


def test_requests_without_a_version_come_from_the_cli_before_versions(run_dir: Path) -> None:
    write_request(run_dir, "d1", {"id": "d1", "app": "", "timeout": 30})
    assert take_requests(run_dir) == ([DeployRequest("d1", "", 30.0)], [])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("not json", "is not JSON"),
        ({"id": "d1"}, "state: Field required"),
        ({"id": "d1", "state": "done"}, "state: Input should be 'pending', 'ok' or 'failed'"),
        ({"id": "d1", "state": "ok", "new_master": "4101"}, "new_master: Input should be"),
        ({"id": "d1", "state": "ok", "version": 9}, "format version 9"),
    ],
)
def test_a_damaged_result_is_a_clear_error(run_dir: Path, content: object, reason: str) -> None:
    path = deploy_dir(run_dir) / "d1.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(DeployFileError) as refused:
        read_result(run_dir, "d1")
    assert str(path) in str(refused.value) and reason in str(refused.value)
    with pytest.raises(DeployFileError):
        await_result(run_dir, DeployRequest("d1"), os.getpid(), 5.0, lambda _line: None)
