from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_phoenix.stack.autoscale import (
    ScaleDecision,
    ScalePolicy,
    ScaleState,
    decide,
    initial_state,
    target_workers,
)

DEFAULT = ScalePolicy()
Trace = Sequence[tuple[float, float | None]]


def replay(
    trace: Iterable[tuple[float, float | None]], policy: ScalePolicy = DEFAULT
) -> list[ScaleDecision]:
    """Feed (time, rate) samples through decide, one decision per sample."""
    state, decisions = initial_state(policy), []
    for now, rate in trace:
        decision = decide(now, rate, state, policy)
        decisions.append(decision)
        state = decision.state
    return decisions


def desired(trace: Trace, policy: ScalePolicy = DEFAULT) -> list[int]:
    return [d.state.desired for d in replay(trace, policy)]


def changes(trace: Trace, policy: ScalePolicy = DEFAULT) -> int:
    return sum(d.changed for d in replay(trace, policy))


def steady(rate: float | None, start: int, end: int) -> list[tuple[float, float | None]]:
    """One sample a second, for t in [start, end)."""
    return [(float(t), rate) for t in range(start, end)]


# target_workers


@pytest.mark.parametrize(
    ("rate", "workers"),
    [
        (0.0, 1),
        (5.0, 1),
        (10.0, 1),
        (10.1, 2),
        (20.0, 2),
        (20.000001, 3),
        (50.0, 5),
        (79.9, 8),
        (80.0, 8),
        (1000.0, 8),
        (math.inf, 8),
    ],
)
def test_target_is_ceil_of_rate_over_rps_within_bounds(rate: float, workers: int) -> None:
    assert target_workers(rate, DEFAULT) == workers


def test_target_is_not_pushed_up_by_float_division() -> None:
    # 2.1 / 0.3 == 7.000000000000001 in floats, yet 7 workers of 0.3 req/s do cover 2.1.
    policy = ScalePolicy(max_workers=20, rps_per_worker=0.3)
    assert target_workers(2.1, policy) == 7
    assert target_workers(2.1000001, policy) == 8
    assert target_workers(10.5, ScalePolicy(max_workers=20, rps_per_worker=0.7)) == 15


def test_target_respects_a_raised_minimum() -> None:
    assert target_workers(0.0, ScalePolicy(min_workers=3)) == 3


@pytest.mark.parametrize("rate", [-1.0, math.nan, -math.inf])
def test_target_refuses_a_rate_that_is_not_a_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        target_workers(rate, DEFAULT)


# policy


def test_default_policy_matches_the_issue() -> None:
    assert ScalePolicy(1, 8, 10.0, 60.0) == DEFAULT
    assert initial_state(DEFAULT) == ScaleState(desired=1)
    assert initial_state(ScalePolicy(min_workers=3)).desired == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_workers": 5, "max_workers": 2}, "min_workers=5 is above max_workers=2"),
        ({"min_workers": 0}, "min_workers must be at least 1"),
        ({"min_workers": -1, "max_workers": -1}, "min_workers must be at least 1"),
        ({"rps_per_worker": 0.0}, "rps_per_worker"),
        ({"rps_per_worker": -10.0}, "rps_per_worker"),
        ({"rps_per_worker": math.nan}, "rps_per_worker"),
        ({"rps_per_worker": math.inf}, "rps_per_worker"),
        ({"scale_in_window": -1.0}, "scale_in_window"),
        ({"scale_in_window": math.nan}, "scale_in_window"),
        ({"scale_in_window": math.inf}, "scale_in_window"),
    ],
)
def test_policy_refuses_values_that_cannot_work(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ScalePolicy(**kwargs)  # type: ignore[arg-type]


def test_decide_refuses_a_time_that_is_not_a_time() -> None:
    with pytest.raises(ValueError, match="now"):
        decide(math.nan, 5.0, initial_state(DEFAULT), DEFAULT)


# traces


def test_no_traffic_stays_at_the_minimum() -> None:
    assert desired(steady(0.0, 0, 300)) == [1] * 300
    assert changes(steady(0.0, 0, 300), ScalePolicy(min_workers=2)) == 0


def test_first_scale_out_happens_only_above_ten() -> None:
    assert desired(steady(10.0, 0, 5)) == [1] * 5
    assert desired([(0.0, 10.1)]) == [2]


def test_fifty_rps_gets_five_workers_at_the_first_sample() -> None:
    [decision] = replay([(0.0, 50.0)])
    assert decision.state.desired == 5
    assert decision.changed
    assert decision.reason == "rate 50.0 req/s > 10 → 5 workers"


def test_a_cluster_counts_replicas_in_its_reasons() -> None:
    policy = ScalePolicy(2, 6, 10.0, 5.0, unit="replicas")
    out, steady_, back = replay([(0.0, 60.0), (1.0, 60.0), (7.0, 0.0)], policy)
    assert out.reason == "rate 60.0 req/s > 20 → 6 replicas (max)"
    assert steady_.reason == "rate 60.0 req/s: 6 replicas"
    assert back.reason == "rate at most 20 req/s for 5 s → 2 replicas"


def test_a_flood_is_capped_at_the_maximum() -> None:
    [decision] = replay([(0.0, 1000.0)])
    assert decision.state.desired == 8
    assert decision.reason.endswith("→ 8 workers (max)")


def test_a_ramp_up_scales_out_at_each_step() -> None:
    trace = [(float(t), 10.0 * t + 5) for t in range(10)]
    assert desired(trace) == [1, 2, 3, 4, 5, 6, 7, 8, 8, 8]
    assert [d.changed for d in replay(trace)] == [False] + [True] * 7 + [False] * 2


def test_a_drop_to_zero_waits_a_window_after_the_last_high_sample() -> None:
    trace = steady(50.0, 0, 30) + steady(0.0, 30, 200)
    counts = desired(trace)
    assert counts[:89] == [5] * 89  # the last 50 req/s sample is at t=29
    assert counts[89:] == [1] * (200 - 89)
    decisions = replay(trace)
    assert decisions[89].changed
    assert decisions[89].reason == "rate at most 10 req/s for 60 s → 1 workers"
    assert sum(d.changed for d in decisions) == 2


def test_a_steady_rate_around_ten_scales_out_once_and_never_in() -> None:
    trace = [(float(t), 9.5 if t % 2 else 10.5) for t in range(600)]
    decisions = replay(trace)
    assert sum(d.changed for d in decisions) == 1
    assert decisions[0].changed
    assert {d.state.desired for d in decisions} == {2}


def test_a_slow_wobble_around_a_threshold_does_not_flap() -> None:
    # 30 s above, 20 s below, repeated: the low spells are shorter than the window.
    trace = [(float(t), 41.0 if t % 50 < 30 else 39.0) for t in range(1200)]
    assert changes(trace) == 1
    assert set(desired(trace)) == {5}


def test_a_one_sample_spike_scales_out_and_back_after_the_window() -> None:
    trace = [*steady(0.0, 0, 10), (10.0, 75.0), *steady(0.0, 11, 120)]
    counts = desired(trace)
    assert counts[9:12] == [1, 8, 8]
    assert counts[69] == 8
    assert counts[70:] == [1] * 50
    assert changes(trace) == 2


def test_a_gradual_decline_steps_down_one_window_behind() -> None:
    # 80 req/s falling by 10 every 30 s: each count is given up 60 s after its rate was
    # last seen, one worker at a time.
    trace: Trace = [(float(t), 80.0 - 10.0 * (t // 30)) for t in range(240)]
    moves = [
        (int(t), d.state.desired)
        for (t, _), d in zip(trace, replay(trace), strict=True)
        if d.changed
    ]
    assert moves == [(0, 8), (89, 7), (119, 6), (149, 5), (179, 4), (209, 3), (239, 2)]


def test_a_sharp_decline_steps_down_through_what_the_window_still_holds() -> None:
    trace = [(0.0, 80.0), (1.0, 50.0), (2.0, 20.0), *steady(0.0, 3, 100)]
    counts = desired(trace)
    assert counts[59:63] == [8, 5, 2, 1]


def test_missing_samples_keep_the_count() -> None:
    trace = steady(50.0, 0, 10) + steady(None, 10, 200)
    decisions = replay(trace)
    assert [d.state.desired for d in decisions] == [5] * 200
    assert decisions[-1].reason == "rate unknown: 5 workers"


def test_missing_samples_do_not_count_as_low() -> None:
    # The edge restarts for 100 s; scale-in needs a full window of rates seen to be low.
    trace = steady(50.0, 0, 10) + steady(None, 10, 110) + steady(0.0, 110, 300)
    counts = desired(trace)
    assert counts[168] == 5
    assert counts[169] == 1


def test_a_missing_sample_restarts_the_stabilisation_window() -> None:
    trace = steady(50.0, 0, 10) + steady(0.0, 10, 40) + [(40.0, None)] + steady(0.0, 41, 200)
    counts = desired(trace)
    assert counts[99] == 5
    assert counts[100] == 1


def test_missing_samples_do_not_stop_a_scale_out() -> None:
    trace = [(0.0, None), (1.0, 30.0), (2.0, None), (3.0, 70.0)]
    assert desired(trace) == [1, 3, 3, 7]


@pytest.mark.parametrize("bad", [math.nan, -1.0, -math.inf, math.inf])
def test_rates_that_are_not_rates_count_as_missing(bad: float) -> None:
    with_bad = steady(50.0, 0, 10) + steady(bad, 10, 110) + steady(0.0, 110, 300)
    with_none = steady(50.0, 0, 10) + steady(None, 10, 110) + steady(0.0, 110, 300)
    assert desired(with_bad) == desired(with_none)
    assert replay([(0.0, bad)])[0].reason == "rate unknown: 1 workers"


def test_window_zero_scales_in_at_once() -> None:
    policy = ScalePolicy(scale_in_window=0.0)
    trace = [(0.0, 50.0), (1.0, 0.0), (2.0, 35.0), (3.0, 12.0), (4.0, None), (5.0, 0.0)]
    assert desired(trace, policy) == [5, 1, 4, 2, 2, 1]


def test_min_equal_to_max_never_changes() -> None:
    policy = ScalePolicy(min_workers=3, max_workers=3)
    trace = steady(0.0, 0, 30) + steady(500.0, 30, 60) + steady(None, 60, 70) + steady(5.0, 70, 200)
    decisions = replay(trace, policy)
    assert {d.state.desired for d in decisions} == {3}
    assert not any(d.changed for d in decisions)


def test_the_history_stays_short_under_a_noisy_rate() -> None:
    trace = [(float(t), float((t * 37) % 90)) for t in range(3600)]
    for decision in replay(trace):
        assert len(decision.state.history) <= DEFAULT.max_workers


def test_a_clock_going_back_does_not_scale_in_early() -> None:
    trace = steady(0.0, 0, 50) + steady(50.0, 50, 100) + steady(0.0, 100, 130)
    # The clock jumps back from t=129 to t=40, before every 50 req/s sample.
    after: list[tuple[float, float | None]] = [(40.0 + s, 0.0) for s in range(200)]
    decisions = replay(trace + after)
    counts = [d.state.desired for d in decisions]
    assert counts[:50] == [1] * 50
    assert counts[50:130] == [5] * 80
    back = decisions[130]
    assert back.state.desired == 5
    assert "clock went back" in back.reason
    assert all(t <= 40.0 for t, _ in back.state.history)
    # The whole window is counted again from the jump: in at 40 + 60 on the new clock.
    assert counts[130:190] == [5] * 60
    assert counts[190:] == [1] * 140


def test_a_clock_going_back_still_scales_out() -> None:
    trace = [*steady(20.0, 100, 110), (50.0, 70.0), (51.0, 20.0)]
    assert desired(trace) == [2] * 10 + [7, 7]


def test_repeated_samples_at_the_same_time_are_not_a_clock_going_back() -> None:
    decisions = replay([(5.0, 50.0), (5.0, 50.0), (5.0, 0.0)])
    assert [d.state.desired for d in decisions] == [5, 5, 5]
    assert "clock" not in decisions[-1].reason


# properties

policies = st.builds(
    lambda low, extra, rps, window: ScalePolicy(low, low + extra, rps, window),
    st.integers(1, 4),
    st.integers(0, 8),
    st.floats(0.5, 50.0),
    st.sampled_from([0.0, 1.0, 5.0, 10.0, 30.0, 60.0]) | st.floats(0.0, 90.0),
)
rates = (
    st.floats(0.0, 600.0)
    | st.sampled_from([0.0, 10.0, 10.1, 9.9])
    | st.none()
    | st.sampled_from([math.nan, -1.0, math.inf])
)
# Increasing times at irregular steps, as a late supervisor tick would produce.
steps = st.floats(0.1, 20.0)
traces = st.lists(st.tuples(steps, rates), max_size=120).map(
    lambda pairs: [
        (sum(step for step, _ in pairs[: i + 1]), rate) for i, (_, rate) in enumerate(pairs)
    ]
)


def known(rate: float | None) -> bool:
    return rate is not None and math.isfinite(rate) and rate >= 0


@settings(max_examples=200, deadline=None)
@given(policies, traces)
def test_desired_stays_within_bounds_and_covers_the_latest_rate(
    policy: ScalePolicy, trace: Trace
) -> None:
    for (_, rate), decision in zip(trace, replay(trace, policy), strict=True):
        assert policy.min_workers <= decision.state.desired <= policy.max_workers
        if rate is not None and known(rate):
            assert decision.state.desired >= target_workers(rate, policy)


@settings(max_examples=200, deadline=None)
@given(policies, traces, st.floats(0.0, 600.0))
def test_a_constant_rate_settles_on_its_target_after_the_window(
    policy: ScalePolicy, trace: Trace, rate: float
) -> None:
    start = trace[-1][0] + 1.0 if trace else 0.0
    settle = [(start + s, rate) for s in range(math.ceil(policy.scale_in_window) + 2)]
    assert desired([*trace, *settle], policy)[-1] == target_workers(rate, policy)


@settings(max_examples=200, deadline=None)
@given(policies, traces)
def test_changes_are_bounded_by_target_transitions(policy: ScalePolicy, trace: Trace) -> None:
    targets = [target_workers(r, policy) for _, r in trace if r is not None and known(r)]
    transitions = sum(a != b for a, b in zip([policy.min_workers, *targets], targets, strict=False))
    assert changes(trace, policy) <= transitions


@settings(max_examples=200, deadline=None)
@given(policies, traces)
def test_scale_in_only_after_a_whole_window_of_lower_targets(
    policy: ScalePolicy, trace: Trace
) -> None:
    previous = policy.min_workers
    for i, decision in enumerate(replay(trace, policy)):
        now, count = trace[i][0], decision.state.desired
        if count < previous:
            recent = [r for t, r in trace[: i + 1] if t > now - policy.scale_in_window]
            assert all(r is not None and known(r) for r in recent[-1:])
            assert all(
                target_workers(r, policy) <= count for r in recent if r is not None and known(r)
            )
        previous = count


@settings(max_examples=100, deadline=None)
@given(policies, st.lists(st.tuples(st.floats(-1000.0, 1000.0), rates), max_size=80))
def test_any_clock_never_crashes_nor_leaves_the_bounds(
    policy: ScalePolicy, trace: list[tuple[float, float | None]]
) -> None:
    for decision in replay(trace, policy):
        assert policy.min_workers <= decision.state.desired <= policy.max_workers
        assert decision.reason
