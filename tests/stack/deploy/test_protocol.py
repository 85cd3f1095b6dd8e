"""How `phoenix deploy` hands a request to the supervisor, with no stack: files under
run/deploy, each request taken once, malformed ones refused with the reason."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_phoenix.stack.deploy.protocol import (
    DeployUnanswered,
    deploy_dir,
    mark_accepting,
    request_deploy,
    stop_accepting,
    take_requests,
)


@pytest.fixture
def woken() -> Iterator[list[int]]:
    """This process plays the supervisor: the SIGUSR2 a request sends is caught and counted."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, _frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_request_reaches_an_accepting_supervisor_once(tmp_path: Path, woken: list[int]) -> None:
    with pytest.raises(DeployUnanswered, match="does not take deploys"):
        request_deploy(tmp_path, os.getpid(), "app:app", 30.0)  # nobody marked accepting
    mark_accepting(tmp_path, os.getpid())
    sent = request_deploy(tmp_path, os.getpid(), "app:app", 30.0)
    assert woken == [signal.SIGUSR2]
    [request_file] = deploy_dir(tmp_path).glob("*.request.json")
    assert stat.S_IMODE(request_file.stat().st_mode) == 0o600
    assert take_requests(tmp_path) == ([sent], [])
    assert take_requests(tmp_path) == ([], [])  # taken once
    stop_accepting(tmp_path)
    with pytest.raises(DeployUnanswered):
        request_deploy(tmp_path, os.getpid(), "", 30.0)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"app": " app:app"}', "invalid request: app"),
        ('{"app": 7}', "invalid request: app"),
        ('{"timeout": "soon"}', "invalid request: timeout"),
        ('{"timeout": true}', "invalid request: timeout"),
        ('{"timeout": 0.5}', "out of range"),
        ('"not an object"', "invalid request: app"),
        ('{"app": "app:app", "timeo', "unreadable request"),  # never a deploy of defaults
    ],
)
def test_a_malformed_request_is_refused_with_its_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    mark_accepting(tmp_path, os.getpid())
    (deploy_dir(tmp_path) / "d-1.request.json").write_text(text)
    taken, refused = take_requests(tmp_path)
    assert taken == []
    [(request_id, why)] = refused
    assert request_id == "d-1" and reason in why, why
    assert not list(deploy_dir(tmp_path).glob("*.request.json"))  # answered, not retried
