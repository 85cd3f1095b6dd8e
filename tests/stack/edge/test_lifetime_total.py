"""A counter of a process that restarts from 0 (HAProxy's DroppedLogs), summed over its
lives by the supervisor (stack.edge.stats.LifetimeTotal)."""

from __future__ import annotations

from cloud_phoenix.stack.edge.stats import LifetimeTotal


def test_samples_add_what_the_counter_gained() -> None:
    total = LifetimeTotal()
    assert [total.update(n) for n in (0, 0, 3, 3, 10)] == [0, 0, 3, 0, 7]
    assert total.total == 10


def test_a_restarted_process_counts_from_its_own_zero() -> None:
    total = LifetimeTotal()
    for sample in (5, 9):  # the first process dropped 9
        total.update(sample)
    # The new one had dropped 2 by the first sample that shows it, 6 by the next.
    assert [total.update(n) for n in (2, 6)] == [2, 4]
    assert total.total == 15


def test_a_restart_to_an_equal_count_is_seen_as_no_change() -> None:
    # The documented loss: a new process that already counts as much as the old one did is
    # taken for the old one; what it counted before that sample is not added.
    total = LifetimeTotal()
    total.update(4)
    assert total.update(4) == 0 and total.total == 4
