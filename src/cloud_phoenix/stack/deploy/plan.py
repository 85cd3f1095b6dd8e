"""The pure part of a deploy: from what was seen this tick, the next state and step."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum

from cloud_phoenix.proc.child import ChildSpec
from cloud_phoenix.stack.deploy.protocol import DeployRequest

STARTING, DRAINING, ABORTING, DONE = "starting", "draining", "aborting", "done"
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception)(?::|$)")


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a deploy stands. `deadline`: ready by then (starting), or killed after it
    (draining the old master, aborting the new one)."""

    request: DeployRequest
    app: str
    workers: int
    started: float
    deadline: float
    phase: str = STARTING
    ready_at: float | None = None
    ok: bool | None = None
    reason: str = ""
    rolled_back: bool = False  # the new generation failed and the old one serves on
    killed: bool = False


@dataclass(frozen=True, slots=True)
class Seen:
    """What the shell saw this tick."""

    new_exit: int | None = None  # the new master's exit code, once it has exited
    new_workers: int = 0
    # The status of the last check of /ready on the new master's own port (None: no answer).
    checked: int | None = None
    detail: str = ""  # what that check got, or the new master's last error line
    stopping_gone: bool = False  # the master being stopped (old or new) has exited


class Step(Enum):
    WAIT = "wait"
    PROMOTE = "promote"  # the new master becomes the supervised one; stop the old gracefully
    ABORT = "abort"  # stop the new master gracefully; the old one stays
    KILL = "kill"  # the master being stopped outlived its grace
    FINISH = "finish"  # write the outcome


def advance(plan: Plan, seen: Seen, now: float, grace: float) -> tuple[Plan, Step]:
    """The next state of a deploy and what the shell must do for it. `grace`: how long a
    master being stopped gets before it is killed."""
    if plan.phase == STARTING:
        if seen.new_exit is not None:
            reason = f"the new workers' master exited ({seen.new_exit}) before it was ready"
            failed = replace(plan, phase=DONE, ok=False, rolled_back=True)
            return replace(failed, reason=_with(reason, seen)), Step.FINISH
        if seen.checked == 200 and seen.new_workers >= plan.workers:
            ready = replace(plan, phase=DRAINING, ready_at=now, deadline=now + grace, ok=True)
            return ready, Step.PROMOTE
        # 503 is "not ready yet"; anything else is a broken app, and its workers already
        # take a share of the traffic: stop them now rather than at the deadline.
        broken = seen.checked not in (None, 200, 503)
        if broken or now >= plan.deadline:
            reason = (
                "the new workers fail their readiness check"
                if broken
                else f"the new workers were not ready within {plan.request.timeout:g} s "
                f"({seen.new_workers}/{plan.workers} workers up)"
            )
            failed = replace(plan, phase=ABORTING, deadline=now + grace, ok=False, rolled_back=True)
            return replace(failed, reason=_with(reason, seen)), Step.ABORT
        return plan, Step.WAIT
    if plan.phase in (DRAINING, ABORTING):
        if seen.stopping_gone:
            return replace(plan, phase=DONE), Step.FINISH
        if now >= plan.deadline and not plan.killed:
            return replace(plan, killed=True), Step.KILL
    return plan, Step.WAIT


def _with(reason: str, seen: Seen) -> str:
    return f"{reason}: {seen.detail}" if seen.detail else reason


def last_error(text: str) -> str:
    """The line of a gunicorn log that says why it failed: the last exception line of a
    traceback, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line[:300]
    return lines[-1][:300] if lines else ""


def with_check_port(spec: ChildSpec, check_fd: int) -> ChildSpec:
    """A gunicorn master's spec that also listens on the check socket `check_fd`."""
    argv = [*spec.argv[:-1], "--bind", f"fd://{check_fd}", spec.argv[-1]]  # the app stays last
    return replace(spec, argv=argv, pass_fds=(*spec.pass_fds, check_fd))
