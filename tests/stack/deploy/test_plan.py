"""The deploy's pure decision: when a new generation is ready, rolled back or killed."""

from __future__ import annotations

from cloud_phoenix.stack.deploy import DeployRequest, Plan
from cloud_phoenix.stack.deploy.plan import (
    ABORTING,
    DONE,
    DRAINING,
    Seen,
    Step,
    advance,
    last_error,
)

PLAN = Plan(DeployRequest("d1", "", 60.0), "app:app", 2, started=0.0, deadline=60.0)


def test_ready_only_with_every_worker_up_and_a_200() -> None:
    assert advance(PLAN, Seen(new_workers=1, checked=200), 1.0, 25)[1] is Step.WAIT
    assert advance(PLAN, Seen(new_workers=2, checked=503), 1.0, 25)[1] is Step.WAIT
    plan, step = advance(PLAN, Seen(new_workers=2, checked=200), 1.5, 25)
    assert step is Step.PROMOTE and plan.phase == DRAINING and plan.ok
    assert plan.ready_at == 1.5 and plan.deadline == 26.5


def test_a_failing_new_generation_is_rolled_back() -> None:
    plan, step = advance(PLAN, Seen(new_exit=1, detail="ImportError: x"), 2.0, 25)
    assert step is Step.FINISH and plan.phase == DONE and not plan.ok and plan.rolled_back
    assert plan.reason.endswith("ImportError: x")
    plan, step = advance(PLAN, Seen(new_workers=2, checked=404, detail="404"), 2.0, 25)
    assert step is Step.ABORT and plan.phase == ABORTING and "readiness" in plan.reason
    plan, step = advance(PLAN, Seen(new_workers=1), 60.0, 25)
    assert step is Step.ABORT and "not ready within 60 s (1/2 workers up)" in plan.reason


def test_a_master_being_stopped_is_killed_once_after_its_grace() -> None:
    draining, _ = advance(PLAN, Seen(new_workers=2, checked=200), 1.0, 25)
    assert advance(draining, Seen(), 20.0, 25)[1] is Step.WAIT
    killed, step = advance(draining, Seen(), 26.0, 25)
    assert step is Step.KILL and killed.killed
    assert advance(killed, Seen(), 27.0, 25)[1] is Step.WAIT
    done, step = advance(killed, Seen(stopping_gone=True), 27.5, 25)
    assert step is Step.FINISH and done.ok


def test_the_error_line_of_a_gunicorn_log() -> None:
    log = (
        "[2026-11-28] [9] [INFO] Starting gunicorn\nTraceback (most recent call last):\n"
        "  File \"x.py\", line 1\nModuleNotFoundError: No module named 'y'\n"
        '127.0.0.1 - "GET / HTTP/1.1" 200\n'
    )
    assert last_error(log) == "ModuleNotFoundError: No module named 'y'"
    assert last_error("Error: no app\n") == "Error: no app"
    assert last_error("just this\n\n") == "just this"
    assert last_error("") == ""
