"""The backup prune plan and the daily schedule: pure, across simulated days and weeks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_phoenix.backup import (
    BackupError,
    BackupInfo,
    BackupResult,
    DailyBackups,
    JournalDay,
    PrunePlan,
    RetentionPolicy,
    newest_good,
    next_run,
    plan_prune,
)
from cloud_phoenix.config import Settings

WEEK = RetentionPolicy(7)
START = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def daily(days: int, start: datetime = START, good: bool = True) -> list[BackupInfo]:
    return [BackupInfo(f"b{n:03d}", start + timedelta(days=n), good) for n in range(days)]


def journal(
    first: date, last: date, archived: bool = True, collected: bool = True
) -> list[JournalDay]:
    days = (last - first).days + 1
    return [JournalDay(first + timedelta(days=n), archived, collected) for n in range(days)]


def apply(backups: list[BackupInfo], plan: PrunePlan) -> list[BackupInfo]:
    gone = set(plan.delete_backups)
    return [backup for backup in backups if backup.name not in gone]


# -- retention by calendar day -------------------------------------------------------------


def test_ten_daily_backups_keep_exactly_the_last_seven() -> None:
    backups = daily(10)
    now = backups[-1].created_at
    plan = plan_prune(backups, [], now, WEEK)
    assert plan.delete_backups == ("b000", "b001", "b002")
    assert plan.keep_backups == tuple(f"b{n:03d}" for n in range(3, 10))


def test_ten_simulated_days_pruning_after_each_backup_keeps_seven() -> None:
    kept: list[BackupInfo] = []
    for day in range(10):
        now = START + timedelta(days=day)
        kept.append(BackupInfo(f"b{day:03d}", now, True))
        kept = apply(kept, plan_prune(kept, [], now, WEEK))
        assert len(kept) == min(day + 1, 7)
    assert [b.name for b in kept] == [f"b{n:03d}" for n in range(3, 10)]


def test_seconds_of_jitter_do_not_change_the_count() -> None:
    # A week ago's backup ran 5 s later in the day than today's: by age it would be
    # younger than 7 days and an 8th backup would be kept.
    backups = [
        BackupInfo(f"b{n}", START + timedelta(days=n, seconds=5 if n == 2 else 0), True)
        for n in range(10)
    ]
    plan = plan_prune(backups, [], START + timedelta(days=9, seconds=1), WEEK)
    assert len(plan.keep_backups) == 7
    assert "b2" in plan.delete_backups


def test_several_backups_a_day_are_all_kept_within_the_retention() -> None:
    backups = [BackupInfo(f"b{n}", START + timedelta(hours=6 * n), True) for n in range(4 * 10)]
    now = backups[-1].created_at
    plan = plan_prune(backups, [], now, WEEK)
    assert len(plan.keep_backups) == 4 * 7
    assert all(b.created_at.date() >= now.date() - timedelta(days=6) for b in apply(backups, plan))


def test_days_are_counted_in_the_time_zone_of_now() -> None:
    tz = timezone(timedelta(hours=-5))
    # 03:00 local is 08:00 UTC: the same instants, counted in local days.
    backups = [
        BackupInfo(f"b{n}", datetime(2026, 3, 1 + n, 8, 0, tzinfo=UTC), True) for n in range(10)
    ]
    now = datetime(2026, 3, 10, 3, 0, 30, tzinfo=tz)
    assert len(plan_prune(backups, [], now, WEEK).keep_backups) == 7


def test_retention_of_one_day_keeps_today_only() -> None:
    backups = daily(3)
    plan = plan_prune(backups, [], backups[-1].created_at + timedelta(hours=1), RetentionPolicy(1))
    assert plan.keep_backups == ("b002",)


# -- the newest good backup ---------------------------------------------------------------


def test_a_failed_latest_backup_never_costs_the_newest_good_one() -> None:
    good = daily(3)  # March 1..3
    failed = [BackupInfo(f"f{n}", START + timedelta(days=10 + n), False) for n in range(8)]
    now = failed[-1].created_at
    plan = plan_prune(good + failed, [], now, WEEK)
    assert plan.delete_backups[:2] == ("b000", "b001")
    assert "b002" in plan.keep_backups  # 15 days old, but the newest good one
    assert "f0" in plan.delete_backups  # failed and outside the retention


def test_failed_backups_inside_the_retention_are_kept_for_inspection() -> None:
    backups = [*daily(2), BackupInfo("failed", START + timedelta(days=2), False)]
    plan = plan_prune(backups, [], START + timedelta(days=3), WEEK)
    assert plan.delete_backups == ()


def test_no_good_backup_at_all_prunes_by_age_only() -> None:
    backups = daily(10, good=False)
    plan = plan_prune(backups, [], backups[-1].created_at, WEEK)
    assert len(plan.keep_backups) == 7
    assert newest_good(backups) is None


# -- journal files -------------------------------------------------------------------------


def test_journal_files_outside_the_retention_go_once_archived_and_collected() -> None:
    now = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)
    days = journal(date(2026, 3, 1), date(2026, 3, 10))
    plan = plan_prune([], days, now, WEEK)
    assert plan.delete_journal_days == (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3))


def test_unarchived_or_uncollected_journal_files_are_kept_whatever_their_age() -> None:
    now = datetime(2026, 3, 30, tzinfo=UTC)
    days = [
        JournalDay(date(2026, 3, 1), archived=False, collected=True),
        JournalDay(date(2026, 3, 2), archived=True, collected=False),
        JournalDay(date(2026, 3, 3), archived=True, collected=True),
    ]
    assert plan_prune([], days, now, WEEK).delete_journal_days == (date(2026, 3, 3),)


def test_journal_days_are_utc_days_even_when_now_is_local() -> None:
    # 23:30 on March 9 at UTC-5 is already March 10 in UTC: March 4 is then outside.
    now = datetime(2026, 3, 9, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    days = journal(date(2026, 3, 1), date(2026, 3, 10))
    assert plan_prune([], days, now, WEEK).delete_journal_days[-1] == date(2026, 3, 3)


def test_todays_journal_file_is_never_deleted() -> None:
    today = date(2026, 3, 10)
    plan = plan_prune(
        [],
        [JournalDay(today, True, True)],
        datetime(2026, 3, 10, 23, 59, tzinfo=UTC),
        RetentionPolicy(1),
    )
    assert plan.delete_journal_days == ()


def test_policy_and_clock_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetentionPolicy(0)
    with pytest.raises(ValueError, match="aware"):
        plan_prune([], [], datetime(2026, 3, 1), WEEK)


# -- properties ----------------------------------------------------------------------------

backup_lists = st.lists(
    st.builds(
        BackupInfo,
        name=st.uuids().map(str),
        created_at=st.integers(0, 40 * 86400).map(lambda s: START + timedelta(seconds=s)),
        good=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda b: b.name,
)
journal_lists = st.lists(
    st.builds(
        JournalDay,
        day=st.integers(0, 40).map(lambda n: START.date() + timedelta(days=n)),
        archived=st.booleans(),
        collected=st.booleans(),
    ),
    max_size=40,
    unique_by=lambda j: j.day,
)
nows = st.integers(0, 50 * 86400).map(lambda s: START + timedelta(seconds=s))


@given(backup_lists, journal_lists, nows, st.integers(1, 14))
@settings(max_examples=300)
def test_plan_properties(
    backups: list[BackupInfo], days: list[JournalDay], now: datetime, retention: int
) -> None:
    policy = RetentionPolicy(retention)
    plan = plan_prune(backups, days, now, policy)
    first_kept = now.date() - timedelta(days=retention - 1)
    deleted, kept = set(plan.delete_backups), set(plan.keep_backups)
    # A partition of the backups.
    assert deleted.isdisjoint(kept)
    assert deleted | kept == {b.name for b in backups}
    # The newest good backup survives; nothing inside the retention is deleted.
    protected = newest_good(backups)
    if protected is not None:
        assert protected.name in kept
    for backup in backups:
        if backup.created_at.date() >= first_kept:
            assert backup.name in kept
        elif backup is not protected:
            assert backup.name in deleted
    # A journal file goes only when old, archived and collected; today's never.
    by_day = {item.day: item for item in days}
    for day in plan.delete_journal_days:
        assert by_day[day].archived and by_day[day].collected
        assert day < first_kept <= now.date()
    # Planning again after applying the plan deletes nothing more.
    remaining = apply(backups, plan)
    left = [item for item in days if item.day not in set(plan.delete_journal_days)]
    again = plan_prune(remaining, left, now, policy)
    assert again.delete_backups == () and again.delete_journal_days == ()


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 10))
@settings(max_examples=200)
def test_simulated_weeks_of_daily_backups(outcomes: Sequence[bool], retention: int) -> None:
    """One backup a day (True: it succeeded), pruned after each success, for weeks."""
    policy = RetentionPolicy(retention)
    folder: list[BackupInfo] = []
    for day, ok in enumerate(outcomes):
        now = START + timedelta(days=day, seconds=day % 7)
        folder.append(BackupInfo(f"d{day}", now, ok))
        if ok:
            folder = apply(folder, plan_prune(folder, [], now, policy))
        window = [b for b in folder if (now.date() - b.created_at.date()).days < retention]
        # Everything of the last `retention` days is there...
        expected = [d for d in range(max(0, day - retention + 1), day + 1)]
        assert [b.name for b in window] == [f"d{d}" for d in expected]
        # ...and at most the newest good backup besides, once a success has pruned.
        if ok:
            older = [b for b in folder if b not in window]
            assert len(older) <= 1 and all(b.good for b in older)
        if any(outcomes[: day + 1]):
            assert newest_good(folder) is not None


# -- the daily schedule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 3, 1, 2, 59, 59), datetime(2026, 3, 1, 3, 0)),
        (datetime(2026, 3, 1, 3, 0), datetime(2026, 3, 2, 3, 0)),
        (datetime(2026, 3, 1, 3, 0, 1), datetime(2026, 3, 2, 3, 0)),
        (datetime(2026, 2, 28, 23, 0), datetime(2026, 3, 1, 3, 0)),
        (datetime(2026, 12, 31, 4, 0), datetime(2027, 1, 1, 3, 0)),
    ],
)
def test_next_run(now: datetime, expected: datetime) -> None:
    assert next_run(now, "03:00") == expected


def test_daily_backups_start_once_a_day_in_a_thread(tmp_path: Path) -> None:
    clock = [datetime(2026, 3, 1, 2, 0)]
    calls: list[dict[str, Any]] = []
    release = threading.Event()
    done: Any = object()

    def runner(_settings: Settings, **kwargs: Any) -> Any:
        calls.append(kwargs)
        release.wait(5)
        if len(calls) == 2:
            raise BackupError("disk full", 73)
        return done

    job = DailyBackups(Settings(home=tmp_path), clock=lambda: clock[0], runner=runner)
    assert job.next_at == datetime(2026, 3, 1, 3, 0)
    assert not job.tick()
    clock[0] = datetime(2026, 3, 1, 3, 0, 1)
    assert job.tick()
    assert job.running and not job.tick()  # never two at once, never twice a day
    release.set()
    job.join(5)
    assert job.last_result is done
    assert job.next_at == datetime(2026, 3, 2, 3, 0)
    clock[0] = datetime(2026, 3, 2, 3, 0)
    assert job.tick()
    job.join(5)
    assert isinstance(job.last_error, BackupError)  # logged, and tried again the next day
    assert len(calls) == 2


def test_daily_backups_off_start_none(tmp_path: Path) -> None:
    clock = [datetime(2026, 3, 1, 2, 0)]
    calls: list[Settings] = []

    def runner(settings: Settings) -> BackupResult:
        calls.append(settings)
        raise AssertionError("no backup may run")

    settings = Settings.from_env({"PHOENIX_HOME": str(tmp_path), "PHOENIX_BACKUP_AT": "off"})
    job = DailyBackups(settings, clock=lambda: clock[0], runner=runner)
    for day in range(1, 4):
        for hour in range(24):
            clock[0] = datetime(2026, 3, day, hour, 0)
            assert not job.tick()
    assert job.next_at is None and not calls
