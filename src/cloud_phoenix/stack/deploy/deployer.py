"""The shell of a deploy: starts, checks and stops gunicorn masters for the supervisor's loop.

`tick()` is called every loop tick and never blocks: the `/ready` check runs in a thread of
its own, processes are polled, and `advance` decides.
"""

from __future__ import annotations

import http.client
import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.proc.child import Child, ChildSpec
from cloud_phoenix.stack.deploy.plan import (
    DONE,
    STARTING,
    Plan,
    Seen,
    Step,
    advance,
    last_error,
    with_check_port,
)
from cloud_phoenix.stack.deploy.protocol import (
    DeployRequest,
    DeployResult,
    DeployState,
    write_result,
)
from cloud_phoenix.stack.host import listen

log = logging.getLogger(__name__)

PROBE_EVERY = 0.25  # seconds between two checks of /ready
EventSink = Callable[[str, str, dict[str, Any]], None]
# Makes the ready master the supervised gunicorn; returns the old master to drain, if any.
Promote = Callable[[Child, Plan], Child | None]


def probe_ready(port: int, request_id: str, timeout: float = 2.0) -> tuple[int | None, str]:
    """GET /ready on a generation's own check port: (status or None, what it answered)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "GET", "/ready", headers={"User-Agent": "phoenix-deploy", "X-Request-ID": request_id}
        )
        response = connection.getresponse()
        body = response.read(300).decode(errors="replace").strip()
    except (OSError, http.client.HTTPException) as exc:
        return None, f"/ready did not answer: {exc or type(exc).__name__}"
    finally:
        connection.close()
    return response.status, f"/ready answered {response.status}: {body}"


class Deployer:
    """One deploy at a time, advanced a step each tick of the supervisor's loop."""

    def __init__(self, run_dir: Path, grace: float, event: EventSink) -> None:
        self.run_dir, self.grace, self.event = run_dir, grace, event
        self.plan: Plan | None = None
        self.new: Child | None = None  # the new master, until promoted or stopped
        self.stopping: Child | None = None  # the master being stopped (old, or new on failure)
        self.pids: dict[str, int | None] = {}
        self._check: socket.socket | None = None
        self._log_offset = 0
        self._probes = ThreadPoolExecutor(1, thread_name_prefix="deploy-check")
        self._probe: Future[tuple[int | None, str]] | None = None
        self._probed_at = 0.0
        self._checked: tuple[int | None, str] = (None, "")

    @property
    def starting(self) -> bool:
        """The new generation is being checked (the worker count waits meanwhile)."""
        return self.plan is not None and self.plan.phase == STARTING

    def processes(self) -> list[tuple[str, int]]:
        found = (("gunicorn-new", self.new), ("gunicorn-draining", self.stopping))
        return [(name, child.pid) for name, child in found if child and child.pid]

    def refuse(self, request_id: str, reason: str) -> None:
        self._write(DeployResult(request_id, "failed", reason=reason))
        self.event("deploy_failed", f"deploy {request_id} refused: {reason}", {"id": request_id})

    def begin(self, request: DeployRequest, app: str, spec: ChildSpec, workers: int) -> None:
        """Start `spec`'s master with `workers` workers beside the old one, which serves on."""
        if self.plan is not None:
            self.refuse(request.id, f"deploy {self.plan.request.id} is still in progress")
            return
        now = time.monotonic()
        try:
            self._log_offset = spec.log_path.stat().st_size if spec.log_path else 0
        except OSError:
            self._log_offset = 0
        try:
            self._check = listen("127.0.0.1", 0, "deploy check")
            self.new = Child(with_check_port(spec, self._check.fileno()))
            self.new.start(now)
        except (OSError, CannotStart) as exc:
            self._close_check()
            self.new = None
            self.refuse(request.id, f"cannot start the new workers: {exc}")
            return
        assert self.new.process is not None
        self._probe, self._probed_at, self._checked = None, 0.0, (None, "")
        self.plan = Plan(request, app, workers, now, now + request.timeout)
        self.pids = {"new_master": self.new.pid, "old_master": None}
        self._report(now)
        self.event(
            "deploy_started",
            f"deploy {request.id}: {workers} new worker(s) of {app} start beside the old ones",
            {"id": request.id, "app": app, "workers": workers, "new_master": self.new.pid},
        )

    def tick(self, promote: Promote) -> None:
        if self.plan is None:
            return
        now = time.monotonic()
        self.plan, step = advance(self.plan, self._observe(now), now, self.grace)
        if step is Step.PROMOTE and self.new is not None:
            self.stopping, self.new = promote(self.new, self.plan), None
            self.pids["old_master"] = self.stopping.pid if self.stopping else None
            if self.stopping is not None:  # graceful: its workers finish what they hold
                self.stopping.signal(self.stopping.spec.stop_signal)
        elif step is Step.ABORT and self.new is not None:
            self.stopping, self.new = self.new, None
            self.stopping.signal(self.stopping.spec.stop_signal)
        elif step is Step.KILL and self.stopping is not None and self.stopping.process:
            log.warning("deploy: gunicorn %s outlived its grace: killing it", self.stopping.pid)
            self.stopping.process.kill()
        elif step is Step.FINISH:
            self._finish(now)
            return
        if step is not Step.WAIT:
            self._report(now)

    def close(self, grace: float) -> None:
        """The stack stops: stop what the deploy runs and record how it ended."""
        for child in (self.new, self.stopping):
            if child is not None and child.process is not None:
                child.stop(grace)
        if self.plan is not None:
            if self.plan.phase == STARTING:
                reason = "the stack stopped before the new workers were ready"
                self.plan = replace(self.plan, ok=False, reason=reason)
            self._finish(time.monotonic())
        self._probes.shutdown(wait=False, cancel_futures=True)

    def _observe(self, now: float) -> Seen:
        plan = self.plan
        if plan is None or plan.phase != STARTING or self.new is None:
            child = self.stopping
            gone = child is None or child.process is None or child.process.poll() is not None
            return Seen(stopping_gone=gone)
        assert self.new.process is not None
        code = self.new.process.poll()
        if code is not None:
            return Seen(new_exit=code, detail=self._log_tail())
        try:
            workers = len(psutil.Process(self.new.process.pid).children())
        except psutil.Error:
            workers = 0
        if self._probe is not None and self._probe.done():
            self._checked, self._probe = self._probe.result(), None
        due = now - self._probed_at >= PROBE_EVERY
        if self._probe is None and self._check is not None and workers >= plan.workers and due:
            port = self._check.getsockname()[1]
            self._probed_at = now
            self._probe = self._probes.submit(probe_ready, port, f"deploy-{plan.request.id}")
        checked, detail = self._checked
        return Seen(new_workers=workers, checked=checked, detail=detail)

    def _log_tail(self) -> str:
        """Why the new master failed, from what it wrote to the gunicorn log."""
        path = self.new.spec.log_path if self.new is not None else None
        if path is None:
            return ""
        try:
            with open(path, "rb") as output:
                output.seek(max(self._log_offset, path.stat().st_size - 65536))
                detail = last_error(output.read().decode(errors="replace"))
        except OSError:
            return ""
        return f"{detail} (see {path})" if detail else f"see {path}"

    def _report(self, now: float) -> None:
        plan = self.plan
        assert plan is not None
        state: DeployState = "pending" if plan.phase != DONE else ("ok" if plan.ok else "failed")
        ready_s = None if plan.ready_at is None else round(plan.ready_at - plan.started, 3)
        result = DeployResult(
            plan.request.id,
            state,
            phase=plan.phase,
            reason=plan.reason,
            rolled_back=plan.rolled_back,
            app=plan.app,
            workers=plan.workers,
            new_master=self.pids.get("new_master"),
            old_master=self.pids.get("old_master"),
            timeout_s=plan.request.timeout,
            ready_s=ready_s,
            elapsed_s=round(now - plan.started, 3),
        )
        self._write(result)

    def _write(self, result: DeployResult) -> None:
        try:
            write_result(self.run_dir, result)
        except OSError as exc:  # the deploy goes on; the CLI will say it got no outcome
            log.warning("cannot write the result of deploy %s: %s", result.id, exc)

    def _finish(self, now: float) -> None:
        plan = self.plan = replace(self.plan, phase=DONE) if self.plan else None
        if plan is None:
            return
        self._report(now)
        seconds = round(now - plan.started, 3)
        data: dict[str, Any] = {"id": plan.request.id, "app": plan.app, **self.pids}
        data["seconds"] = seconds
        if plan.ok:
            self.event("deploy_succeeded", f"deploy {plan.request.id}: new workers serve", data)
        else:
            outcome = "rolled back" if plan.rolled_back else "failed"
            message = f"deploy {plan.request.id} {outcome}: {plan.reason}"
            self.event("deploy_failed", message, {**data, "reason": plan.reason})
        self.plan, self.new, self.stopping = None, None, None
        self._close_check()

    def _close_check(self) -> None:
        # The promoted master keeps its own copy of the check socket; the supervisor's goes.
        if self._check is not None:
            self._check.close()
            self._check = None
