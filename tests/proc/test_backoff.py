from __future__ import annotations

import pytest

from cloud_phoenix.certs.keymaker import RESTART_BACKOFF
from cloud_phoenix.notify.channel import RetryPolicy
from cloud_phoenix.proc.backoff import RESTART, Backoff


def test_a_child_is_restarted_at_once_then_later_each_time_up_to_ten_seconds() -> None:
    delays = [RESTART.delay(n) for n in range(9)]
    assert delays == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_key_maker_restarts_its_child_by_the_same_policy_bounded_lower() -> None:
    assert [RESTART_BACKOFF.delay(n) for n in range(5)] == [0.0, 0.25, 0.5, 1.0, 2.0]
    assert RESTART_BACKOFF.delay(40) == 5.0


@pytest.mark.parametrize(
    "policy", [RESTART, RESTART_BACKOFF, RetryPolicy(), Backoff(1.0, 9.0, 1e9)]
)
def test_a_child_that_never_stays_up_waits_the_bound_not_an_overflow(policy: Backoff) -> None:
    # A child failing every 10 s reaches failure 1100 after three hours: 2.0 ** 1100 overflows.
    assert policy.delay(1100) == policy.delay(10**9) == policy.max_delay


def test_a_notice_is_retried_by_the_same_policy() -> None:
    assert [RetryPolicy().delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert RetryPolicy(first_delay=0.5, factor=3).delay(3) == 4.5


@pytest.mark.parametrize(
    "kwargs", [{"first_delay": -1.0}, {"max_delay": float("inf")}, {"factor": 0.5}]
)
def test_a_backoff_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Backoff(**{"first_delay": 1.0, "max_delay": 2.0, **kwargs})
