"""How `phoenix deploy` and the supervisor talk: files under PHOENIX_HOME/run/deploy, 0600.

`accepting` holds the pid of a supervisor that takes deploys (one started before deploys
existed would die of SIGUSR2, so the CLI never signals without it). The CLI writes
`ID.request.json` and sends SIGUSR2; the supervisor takes the request (it also looks once a
second, should signals coalesce) and replaces `ID.json` atomically as the deploy goes:
state `pending` (phase `starting`, then `draining`), then `ok` or `failed` with the reason
and the timings. The newest results are kept for the record.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEPLOY_DIR = "deploy"
ACCEPTING = "accepting"
KEEP_RESULTS = 20
TAKEN_WITHIN = 10.0  # seconds a supervisor gets to take a request before the CLI gives up
REQUEST_SUFFIX = ".request.json"
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """One `phoenix deploy`: the app to serve ("" = the stack's PHOENIX_WORKER_APP)."""

    id: str
    app: str = ""
    timeout: float = 60.0


class DeployUnanswered(Exception):
    """The supervisor did not take the request, stopped, or gave no outcome in time."""


def deploy_dir(run_dir: Path) -> Path:
    return run_dir / DEPLOY_DIR


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` atomically, mode 0600: a reader never sees half of it."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=1)
    os.replace(scratch, path)


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
        unreadable = None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # refused: never a deploy of the defaults
            data, unreadable = {}, f"unreadable request: {exc}"
        path.unlink(missing_ok=True)
        app = data.get("app", "") if isinstance(data, dict) else None
        timeout = data.get("timeout", 60.0) if isinstance(data, dict) else None
        if _ID.fullmatch(request_id) is None:
            log.warning("deploy request with an invalid id dropped: %r", request_id)
        elif unreadable is not None:
            refused.append((request_id, unreadable))
        elif not isinstance(app, str) or len(app) > 300 or app != app.strip():
            refused.append((request_id, f"invalid request: app {app!r}"))
        elif isinstance(timeout, bool) or not isinstance(timeout, int | float):
            refused.append((request_id, f"invalid request: timeout {timeout!r}"))
        elif not 1 <= timeout <= 3600:
            refused.append((request_id, f"timeout {timeout:g} s is out of range (1-3600)"))
        else:
            taken.append(DeployRequest(request_id, app, float(timeout)))
    return taken, refused


def write_result(run_dir: Path, request_id: str, result: dict[str, Any]) -> None:
    """Replace the request's result, then prune all but the newest results."""
    folder = deploy_dir(run_dir)
    data = {"id": request_id, **result, "updated": _utc_now()}
    _write_json(folder / f"{request_id}.json", data)
    results = [p for p in folder.glob("*.json") if not p.name.endswith(REQUEST_SUFFIX)]
    for old in sorted(results, key=_mtime)[:-KEEP_RESULTS]:
        old.unlink(missing_ok=True)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the CLI's half -----------------------------------------------------------------------


def read_result(run_dir: Path, request_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads((deploy_dir(run_dir) / f"{request_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    data = {"id": request.id, "app": request.app, "timeout": request.timeout}
    _write_json(deploy_dir(run_dir) / f"{request.id}{REQUEST_SUFFIX}", data)
    os.kill(supervisor_pid, signal.SIGUSR2)
    return request


def describe(result: dict[str, Any]) -> str:
    """One line of progress for a result."""
    state, phase = result.get("state"), result.get("phase")
    if state == "ok":
        return (
            f"deployed in {result.get('elapsed_s')} s: new workers ready after "
            f"{result.get('ready_s')} s (master pid {result.get('new_master')}), old ones "
            f"drained (master pid {result.get('old_master')})"
        )
    if state == "failed" and result.get("rolled_back"):
        return f"rolled back, the old workers serve on: {result.get('reason')}"
    if state == "failed":
        return f"failed: {result.get('reason')}"
    if phase == "draining":
        return (
            f"new workers ready after {result.get('ready_s')} s; draining the old ones "
            f"(master pid {result.get('old_master')})"
        )
    if phase == "aborting":
        return f"the new workers failed; stopping them: {result.get('reason')}"
    return (
        f"new workers starting ({result.get('workers')} x {result.get('app')}, master pid "
        f"{result.get('new_master')}); waiting up to {result.get('timeout_s')} s for /ready"
    )


def await_result(
    run_dir: Path,
    request: DeployRequest,
    supervisor_pid: int,
    timeout: float,
    progress: Callable[[str], None],
    poll: float = 0.2,
) -> dict[str, Any]:
    """The request's outcome (state ok or failed); `progress` gets each phase before it."""
    started = time.monotonic()
    shown: tuple[Any, Any] | None = None
    while True:
        result = read_result(run_dir, request.id)
        elapsed = time.monotonic() - started
        if result is not None and result.get("state") in ("ok", "failed"):
            return result
        if result is not None and (result.get("state"), result.get("phase")) != shown:
            shown = (result.get("state"), result.get("phase"))
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
