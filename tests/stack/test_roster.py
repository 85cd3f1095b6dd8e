"""The supervisor's worker bookkeeping (stack/roster.py): pids in, what changed out."""

from __future__ import annotations

from cloud_phoenix.stack.roster import RosterChange, WorkerRoster


def test_new_workers_are_taken_with_their_start_time() -> None:
    roster = WorkerRoster()
    assert roster.update({10, 11}, True, 2, now=5.0) == RosterChange()
    assert roster.started == {10: 5.0, 11: 5.0}
    roster.update({10, 11, 12}, True, 3, now=6.0)
    assert roster.started[12] == 6.0 and roster.started[10] == 5.0


def test_a_worker_gone_while_the_master_runs_died_and_is_counted_once() -> None:
    roster = WorkerRoster()
    roster.update({10, 11}, True, 2, now=0.0)
    change = roster.update({11}, True, 2, now=1.0)
    assert change.died == (10,) and roster.deaths == 1
    assert roster.update({11, 12}, True, 2, now=1.5).died == ()  # gunicorn's replacement
    assert roster.deaths == 1


def test_a_retired_worker_is_not_a_death() -> None:
    roster = WorkerRoster()
    roster.update({10, 11, 12}, True, 3, now=0.0)
    roster.retire()  # scale-in: TTOU sent
    assert roster.update({10, 11}, True, 2, now=1.0).died == ()
    assert roster.deaths == 0 and roster.retiring == 0
    # The retirement is spent: the next worker to go has died.
    assert roster.update({10}, True, 2, now=2.0).died == (11,)


def test_workers_gone_with_their_master_are_the_masters_exit_not_deaths() -> None:
    roster = WorkerRoster()
    roster.update({10, 11}, True, 2, now=0.0)
    assert roster.update(set(), False, 2, now=1.0).died == ()
    assert roster.deaths == 0 and roster.started == {}


def test_time_below_the_desired_count_is_measured_when_the_spell_ends() -> None:
    roster = WorkerRoster()
    roster.update({10, 11}, True, 2, now=0.0)
    assert roster.update({11}, True, 2, now=1.0).ended_below_desired_s is None  # begins
    assert roster.update({11}, True, 2, now=1.2).ended_below_desired_s is None
    assert roster.update({11, 12}, True, 2, now=1.25).ended_below_desired_s == 0.25
    assert roster.update({11, 12}, True, 2, now=2.0).ended_below_desired_s is None


def test_a_new_master_replaces_the_roster_and_its_pending_retirements() -> None:
    roster = WorkerRoster()
    roster.update({10, 11}, True, 2, now=0.0)
    roster.retire()
    roster.replace([20, 21], now=3.0)
    assert roster.started == {20: 3.0, 21: 3.0} and roster.retiring == 0
    assert roster.update({20}, True, 2, now=4.0).died == (21,)
