"""How `phoenix deploy` and the supervisor talk: files under PHOENIX_HOME/run/deploy, 0600.

`accepting` holds the pid of a supervisor that takes deploys (one started before deploys
existed would die of SIGUSR2, so the CLI never signals without it). The CLI writes
`ID.request.json` (a DeployRequest) and sends SIGUSR2; the supervisor takes the request
(it also looks once a second, should signals coalesce) and replaces `ID.json` (a
DeployResult) atomically as the deploy goes: state `pending` (phase `starting`, then
`draining`), then `ok` or `failed` with the reason and the timings. The newest results are
kept for the record. Both files are read back with their shape checked (stack/runfiles.py).
"""

from __future__ import annotations

import logging
import os
import re
import reprlib
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cloud_phoenix.stack.runfiles import RunFileError, read_json, replace_json

log = logging.getLogger(__name__)

DEPLOY_DIR = "deploy"
ACCEPTING = "accepting"
KEEP_RESULTS = 20
TAKEN_WITHIN = 10.0  # seconds a supervisor gets to take a request before the CLI gives up
REQUEST_SUFFIX = ".request.json"
VERSION = 1  # of the request and result files
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")

DeployState = Literal["pending", "ok", "failed"]


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """One `phoenix deploy`: the app to serve ("" = the stack's PHOENIX_WORKER_APP)."""

    id: str
    app: str = ""
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class DeployResult:
    """Where deploy `id` stands. `phase` while pending: starting, draining or aborting;
    the pids and timings once known; `reason` why it failed."""

    id: str
    state: DeployState
    updated: str = ""  # when the supervisor wrote it (UTC)
    phase: str | None = None
    reason: str = ""
    rolled_back: bool = False  # the new workers failed and the old ones serve on
    app: str = ""
    workers: int | None = None
    new_master: int | None = None
    old_master: int | None = None
    timeout_s: float | None = None
    ready_s: float | None = None
    elapsed_s: float | None = None

    @property
    def finished(self) -> bool:
        return self.state != "pending"


class DeployUnanswered(Exception):
    """The supervisor did not take the request, stopped, or gave no outcome in time."""


class DeployFileError(RunFileError):
    """A request or result file cannot be read: damaged, crafted, or another version's."""


def deploy_dir(run_dir: Path) -> Path:
    return run_dir / DEPLOY_DIR


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the supervisor's half ----------------------------------------------------------------


def mark_accepting(run_dir: Path, pid: int) -> None:
    """Say that the supervisor `pid` takes deploys (SIGUSR2 is safe to send it)."""
    folder = deploy_dir(run_dir)
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / ACCEPTING, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{pid}\n")


def stop_accepting(run_dir: Path) -> None:
    (deploy_dir(run_dir) / ACCEPTING).unlink(missing_ok=True)


def take_requests(run_dir: Path) -> tuple[list[DeployRequest], list[tuple[str, str]]]:
    """The waiting requests, oldest first, each taken once; and (id, why) of the malformed
    ones, to be answered as failed."""
    taken: list[DeployRequest] = []
    refused: list[tuple[str, str]] = []
    for path in sorted(deploy_dir(run_dir).glob(f"*{REQUEST_SUFFIX}"), key=_mtime):
        request_id = path.name.removesuffix(REQUEST_SUFFIX)
        try:
            request, problem = read_json(path, DeployRequest, VERSION), ""
        except RunFileError as exc:
            request, problem = None, str(exc)
        path.unlink(missing_ok=True)
        if _ID.fullmatch(request_id) is None:  # no result can be named after it
            log.warning("deploy request with an invalid id dropped: %r", request_id)
        elif request is not None:
            problem = _invalid(request, request_id)
            if problem:
                refused.append((request_id, problem))
            else:
                taken.append(request)
        elif problem:
            refused.append((request_id, f"invalid request: {problem}"))
    return taken, refused


def _invalid(request: DeployRequest, file_id: str) -> str:
    """Why a well-formed request cannot be taken, or ""."""
    app, timeout = request.app, request.timeout
    if request.id != file_id:
        return f"invalid request: its id {reprlib.repr(request.id)} is not its file's"
    if len(app) > 300 or app != app.strip():
        return f"invalid request: app {reprlib.repr(app)}"
    if not 1 <= timeout <= 3600:
        return f"timeout {timeout:g} s is out of range (1-3600)"
    return ""


def write_result(run_dir: Path, result: DeployResult) -> None:
    """Replace the request's result, then prune all but the newest results."""
    folder = deploy_dir(run_dir)
    stamped = replace(result, updated=_utc_now())
    replace_json(folder / f"{result.id}.json", VERSION, asdict(stamped), mode=0o600)
    results = [p for p in folder.glob("*.json") if not p.name.endswith(REQUEST_SUFFIX)]
    for old in sorted(results, key=_mtime)[:-KEEP_RESULTS]:
        old.unlink(missing_ok=True)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the CLI's half -----------------------------------------------------------------------


def read_result(run_dir: Path, request_id: str) -> DeployResult | None:
    """The result of deploy `request_id` so far, or None before the supervisor writes one.
    Raises DeployFileError when the file is there but is no result this version reads."""
    try:
        return read_json(deploy_dir(run_dir) / f"{request_id}.json", DeployResult, VERSION)
    except RunFileError as exc:
        raise DeployFileError(str(exc)) from None


def request_deploy(run_dir: Path, supervisor_pid: int, app: str, timeout: float) -> DeployRequest:
    """Leave a request for the running supervisor and wake it."""
    try:
        accepting = int((deploy_dir(run_dir) / ACCEPTING).read_text().strip())
    except (OSError, ValueError):
        accepting = None
    if accepting != supervisor_pid:
        raise DeployUnanswered(
            f"the running stack (pid {supervisor_pid}) does not take deploys: it was started "
            "before `phoenix deploy` existed; restart it once (phoenix up)"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    request = DeployRequest(f"{stamp}-{secrets.token_hex(3)}", app, timeout)
    path = deploy_dir(run_dir) / f"{request.id}{REQUEST_SUFFIX}"
    replace_json(path, VERSION, asdict(request), mode=0o600)
    os.kill(supervisor_pid, signal.SIGUSR2)
    return request


def describe(result: DeployResult) -> str:
    """One line of progress for a result."""
    if result.state == "ok":
        return (
            f"deployed in {result.elapsed_s} s: new workers ready after {result.ready_s} s "
            f"(master pid {result.new_master}), old ones drained (master pid "
            f"{result.old_master})"
        )
    if result.state == "failed" and result.rolled_back:
        return f"rolled back, the old workers serve on: {result.reason}"
    if result.state == "failed":
        return f"failed: {result.reason}"
    if result.phase == "draining":
        return (
            f"new workers ready after {result.ready_s} s; draining the old ones "
            f"(master pid {result.old_master})"
        )
    if result.phase == "aborting":
        return f"the new workers failed; stopping them: {result.reason}"
    return (
        f"new workers starting ({result.workers} x {result.app}, master pid "
        f"{result.new_master}); waiting up to {result.timeout_s} s for /ready"
    )


def await_result(
    run_dir: Path,
    request: DeployRequest,
    supervisor_pid: int,
    timeout: float,
    progress: Callable[[str], None],
    poll: float = 0.2,
) -> DeployResult:
    """The request's outcome (state ok or failed); `progress` gets each phase before it.
    Raises DeployUnanswered, or DeployFileError for a result it cannot read."""
    started = time.monotonic()
    shown: tuple[str, str | None] | None = None
    while True:
        result = read_result(run_dir, request.id)
        elapsed = time.monotonic() - started
        if result is not None and result.finished:
            return result
        if result is not None and (result.state, result.phase) != shown:
            shown = (result.state, result.phase)
            progress(describe(result))
        if not _alive(supervisor_pid):
            raise DeployUnanswered(f"the stack (pid {supervisor_pid}) stopped during the deploy")
        if result is None and elapsed > TAKEN_WITHIN:
            raise DeployUnanswered(
                f"the stack (pid {supervisor_pid}) did not take the request in "
                f"{TAKEN_WITHIN:g} s; see PHOENIX_HOME/logs/phoenix.log"
            )
        if elapsed > timeout:
            raise DeployUnanswered(
                f"no outcome after {timeout:g} s; the deploy goes on: see `phoenix status` "
                f"and {deploy_dir(run_dir) / (request.id + '.json')}"
            )
        time.sleep(poll)
