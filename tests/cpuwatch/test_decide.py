from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_phoenix.cpuwatch.decide import (
    CpuPolicy,
    CpuSample,
    CpuState,
    ProcessCpu,
    evaluate,
    wants_endpoints,
)
from cloud_phoenix.notify.notice import Notice

DEFAULT = CpuPolicy()  # 80 %, 2 s to start, 2 s to clear, 1 s samples
HIGH, LOW = 95.0, 10.0


def samples(values: Iterable[float], step: float = 1.0, start: float = 100.0) -> list[CpuSample]:
    """Evenly spaced samples of host CPU."""
    return [CpuSample(start + i * step, value) for i, value in enumerate(values)]


def replay(
    trace: Sequence[CpuSample], policy: CpuPolicy = DEFAULT
) -> tuple[list[tuple[int, Notice]], CpuState]:
    """Feed the trace through evaluate: the notices with the index of the sample that gave
    them, and the final state."""
    state, out = CpuState(), list[tuple[int, Notice]]()
    for index, sample in enumerate(trace):
        state, notices = evaluate(sample, state, policy)
        assert len(notices) <= 1
        out.extend((index, notice) for notice in notices)
    return out, state


def kinds(trace: Sequence[CpuSample], policy: CpuPolicy = DEFAULT) -> list[str]:
    return [notice.kind for _, notice in replay(trace, policy)[0]]


# -- which samples give notices ------------------------------------------------------------


def test_an_idle_hour_gives_no_notice() -> None:
    values = [5 + (i * 37) % 70 for i in range(3600)]  # 5..74 %, never 80
    assert max(values) < DEFAULT.threshold
    assert kinds(samples(values)) == []


def test_one_long_peak_gives_exactly_one_start_and_one_end() -> None:
    trace = samples([LOW] * 10 + [HIGH] * 30 + [LOW] * 10)  # times 100..149
    notices, state = replay(trace)
    assert [(i, n.kind) for i, n in notices] == [(11, "cpu_peak_started"), (41, "cpu_peak_ended")]
    # High from the sample before the run (t=109, where the first high sample's cover
    # begins) to the last high sample (t=139).
    assert notices[1][1].data["duration_seconds"] == 30.0
    assert not state.in_peak and state.peaks == 1


def test_the_start_notice_comes_with_the_sample_that_completes_peak_seconds() -> None:
    # 1 s samples, 2 s: the 1st high sample covers 1 s, the 2nd covers 2 s: start there.
    notices, _ = replay(samples([LOW, HIGH, HIGH, HIGH]))
    assert [i for i, _ in notices] == [2]


@pytest.mark.parametrize(
    ("step", "peak_seconds", "nth_high"),
    [
        (1.0, 2.0, 2),
        (1.0, 3.0, 3),
        (0.5, 2.0, 4),
        (2.0, 2.0, 1),
        (1.0, 0.0, 1),
        (1.0, 2.5, 3),  # 2 s is not enough: the first sample at which 2.5 s is covered
    ],
)
def test_start_timing_for_other_intervals(step: float, peak_seconds: float, nth_high: int) -> None:
    policy = CpuPolicy(peak_seconds=peak_seconds, interval=step)
    notices, _ = replay(samples([LOW] + [HIGH] * 10, step=step), policy)
    assert [(i, n.kind) for i, n in notices] == [(nth_high, "cpu_peak_started")]


def test_clock_jitter_of_under_a_millisecond_does_not_delay_the_start() -> None:
    trace = [CpuSample(0.0, LOW), CpuSample(1.0004, HIGH), CpuSample(1.9996, HIGH)]
    assert [i for i, _ in replay(trace)[0]] == [2]


def test_the_very_first_sample_covers_no_time() -> None:
    # Nothing was watched before it: its CPU counts from its own time on.
    assert [i for i, _ in replay(samples([HIGH] * 4))[0]] == [2]


def test_a_spike_shorter_than_peak_seconds_gives_nothing() -> None:
    assert kinds(samples([LOW, HIGH, LOW, LOW] * 50)) == []
    # 1.5 s of 0.5 s samples at 2 s: short by one sample; one more and it is a peak.
    half = CpuPolicy(interval=0.5)
    assert kinds(samples([LOW] + [HIGH] * 3 + [LOW] * 10, step=0.5), half) == []
    assert kinds(samples([LOW] + [HIGH] * 4 + [LOW] * 10, step=0.5), half) == [
        "cpu_peak_started",
        "cpu_peak_ended",
    ]


def test_exactly_the_threshold_is_high() -> None:
    assert kinds(samples([LOW, 80.0, 80.0, LOW, LOW])) == ["cpu_peak_started", "cpu_peak_ended"]
    assert kinds(samples([LOW, 79.99, 79.99, 79.99, LOW])) == []


def test_flapping_79_81_every_second_for_five_minutes_gives_no_notice() -> None:
    # Each high second is followed by a low one: CPU is never high for 2 s running.
    assert kinds(samples([81.0, 79.0] * 150)) == []


def test_flapping_with_one_second_dips_inside_a_peak_gives_one_start_and_one_end() -> None:
    values = [79.0] + [81.0, 81.0, 79.0] * 100 + [30.0] * 5  # five minutes, then calm
    notices, _ = replay(samples(values))
    assert [(i, n.kind) for i, n in notices] == [(2, "cpu_peak_started"), (301, "cpu_peak_ended")]


def test_two_second_dips_end_a_2s_peak_but_a_longer_clear_time_holds_it() -> None:
    values = [79.0] + [81.0, 81.0, 79.0, 79.0] * 75  # 300 s: by definition 75 separate peaks
    assert kinds(samples(values)) == ["cpu_peak_started", "cpu_peak_ended"] * 75
    hold = CpuPolicy(clear_seconds=5.0)
    assert kinds(samples([*values, 10.0, 10.0, 10.0, 10.0, 10.0]), hold) == [
        "cpu_peak_started",
        "cpu_peak_ended",
    ]


def test_the_end_waits_for_clear_seconds_of_low_cpu() -> None:
    policy = CpuPolicy(peak_seconds=2.0, clear_seconds=5.0)
    notices, _ = replay(samples([LOW] + [HIGH] * 5 + [LOW] * 10), policy)
    # Last high sample at index 5; the low run covers 5 s at index 10.
    assert [(i, n.kind) for i, n in notices] == [(2, "cpu_peak_started"), (10, "cpu_peak_ended")]


# -- gaps, clocks, values that are not numbers --------------------------------------------


def test_a_gap_restarts_the_high_run() -> None:
    trace = [
        CpuSample(0.0, LOW),
        CpuSample(1.0, HIGH),  # 1 s high
        CpuSample(61.0, HIGH),  # a minute unwatched: not counted, the run restarts here
        CpuSample(62.0, HIGH),  # 1 s
        CpuSample(63.0, HIGH),  # 2 s: start
    ]
    assert [(i, n.kind) for i, n in replay(trace)[0]] == [(4, "cpu_peak_started")]


def test_a_late_sample_within_max_gap_still_counts() -> None:
    # A loaded host delays its sampler: 4 s between samples is within 5 intervals.
    trace = [CpuSample(0.0, LOW), CpuSample(4.0, HIGH)]
    assert [i for i, _ in replay(trace)[0]] == [1]
    strict = CpuPolicy(max_gap=3.0)
    assert replay(trace, strict)[0] == []


def test_a_gap_inside_a_peak_keeps_it_and_restarts_the_low_run() -> None:
    trace = [*samples([LOW, HIGH, HIGH, HIGH], start=0.0), CpuSample(100.0, LOW)]
    trace += [CpuSample(101.0, LOW), CpuSample(102.0, LOW)]
    notices, _ = replay(trace)
    assert [(i, n.kind) for i, n in notices] == [(2, "cpu_peak_started"), (6, "cpu_peak_ended")]


def test_a_clock_going_backwards_counts_as_a_gap() -> None:
    trace = [CpuSample(10.0, LOW), CpuSample(11.0, HIGH), CpuSample(5.0, HIGH)]
    trace += [CpuSample(6.0, HIGH), CpuSample(7.0, HIGH)]
    assert [i for i, _ in replay(trace)[0]] == [4]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_a_number_is_not_watched_time(bad: float) -> None:
    values = [LOW, HIGH, bad, HIGH, HIGH, HIGH]  # times 100..105
    # After it the run restarts at t=103 and covers 2 s at t=105.
    assert [i for i, _ in replay(samples(values))[0]] == [5]


def test_nan_inside_a_peak_neither_ends_it_nor_counts_as_calm() -> None:
    values = [LOW, HIGH, HIGH, math.nan, LOW, LOW, LOW]
    assert [(i, n.kind) for i, n in replay(samples(values))[0]] == [
        (2, "cpu_peak_started"),
        (6, "cpu_peak_ended"),
    ]


# -- what the notices say -----------------------------------------------------------------


PROCESSES = (
    ProcessCpu("collector", 30, 1.0),
    ProcessCpu("worker", 12, 41.5),
    ProcessCpu("serve", 10, 44.0),
    ProcessCpu("worker", 11, 41.5),
    ProcessCpu("edge", 20, 3.0),
    ProcessCpu("python3", 99, 2.0, stack=False),
    ProcessCpu("supervisor", 1, 0.5),
    ProcessCpu("gone", 5, math.nan),
)


def test_the_start_notice_names_processes_endpoints_and_workers() -> None:
    endpoints = (("/health", 3), ("/generatecert", 42), ("/", 3))
    trace = [
        CpuSample(0.0, LOW),
        CpuSample(1.0, 90.0),
        CpuSample(2.0, 97.2, PROCESSES, endpoints, workers=3, host="box"),
    ]
    notices, _ = replay(trace)
    [(_, notice)] = notices
    assert notice.kind == "cpu_peak_started"
    assert notice.title == "CPU peak on box: 97 % (threshold 80 %)"
    top = notice.data["processes"]
    # Highest first, ties by name then pid; NaN left out; five at most.
    assert [(p["name"], p["pid"]) for p in top] == [
        ("serve", 10),
        ("worker", 11),
        ("worker", 12),
        ("edge", 20),
        ("python3", 99),
    ]
    assert top[4]["stack"] is False
    assert notice.data["endpoints"] == [
        {"path": "/generatecert", "count": 42},
        {"path": "/", "count": 3},
        {"path": "/health", "count": 3},
    ]
    assert notice.data["workers"] == 3
    assert notice.data["host_percent"] == 97.2
    assert notice.data["high_seconds"] == 2.0
    body = notice.body
    assert "Host CPU 97.2" in body and "threshold 80 %" in body and "for 2.0 s" in body
    assert "Workers: 3" in body
    assert "  serve (pid 10): 44.0 %" in body
    assert "  python3 (pid 99, outside the stack): 2.0 %" in body
    assert "collector" not in body and "gone" not in body
    assert body.index("/generatecert: 42") < body.index("/: 3") < body.index("/health: 3")
    assert "last 10 s" in body


def test_a_start_notice_without_processes_or_requests_says_so() -> None:
    [(_, notice)] = replay(samples([LOW, HIGH, HIGH]))[0]
    assert "(none measured)" in notice.body and "(no requests recorded)" in notice.body
    assert notice.title == "CPU peak: 95 % (threshold 80 %)"


def test_the_end_notice_gives_duration_highest_cpu_and_who_ran_hottest_then() -> None:
    hottest = (ProcessCpu("serve", 10, 90.0), ProcessCpu("worker", 11, 5.0))
    later = (ProcessCpu("worker", 11, 70.0),)
    trace = [
        CpuSample(0.0, LOW),
        CpuSample(1.0, 85.0),
        CpuSample(2.0, 88.0, later),  # start
        CpuSample(3.0, 99.5, hottest),  # the highest point
        CpuSample(4.0, 90.0, later),
        CpuSample(5.0, 20.0),
        CpuSample(6.0, 15.0, host="box"),  # 2 s calm: end
    ]
    notices, _ = replay(trace)
    assert [i for i, _ in notices] == [2, 6]
    end = notices[1][1]
    assert end.kind == "cpu_peak_ended"
    assert end.data["duration_seconds"] == 4.0  # high from t=0 to t=4
    assert end.data["max_percent"] == 99.5
    assert [p["name"] for p in end.data["processes"]] == ["serve", "worker"]
    assert end.title == "CPU peak ended on box after 4 s, highest 100 %"
    assert "for 4.0 s; highest 99.5 %; now 15.0 %" in end.body
    assert "  serve (pid 10): 90.0 %" in end.body


def test_notice_data_is_json_for_the_events_store() -> None:
    from cloud_phoenix.store.base import Event, prepare_event

    trace = [
        CpuSample(0.0, LOW),
        CpuSample(1.0, HIGH),
        CpuSample(2.0, HIGH, PROCESSES, (("/", 1),)),
    ]
    trace += [CpuSample(3.0, LOW), CpuSample(4.0, LOW)]
    for _, notice in replay(trace)[0]:
        prepare_event(Event("2024-01-01T00:00:00.000000Z", notice.kind, notice.title, notice.data))


# -- policy and helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.0},
        {"threshold": 101.0},
        {"threshold": math.nan},
        {"peak_seconds": -1.0},
        {"clear_seconds": math.inf},
        {"interval": 0.0},
        {"max_gap": -0.5},
        {"endpoint_window": 0.0},
    ],
)
def test_a_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CpuPolicy(**kwargs)


def test_policy_defaults() -> None:
    assert DEFAULT.clear == 2.0 and DEFAULT.gap == 5.0
    assert CpuPolicy(clear_seconds=0.0).clear == 0.0
    assert CpuPolicy(interval=0.5).gap == 2.5


def test_endpoints_are_wanted_only_for_a_sample_that_could_start_a_peak() -> None:
    assert wants_endpoints(90.0, CpuState(), DEFAULT)
    assert not wants_endpoints(50.0, CpuState(), DEFAULT)
    assert not wants_endpoints(90.0, CpuState(in_peak=True), DEFAULT)


# -- properties over random traces ----------------------------------------------------------

cpu_values = st.one_of(
    st.floats(0, 100),
    st.sampled_from([79.0, 80.0, 81.0]),
    st.just(math.nan),
)
steps = st.one_of(st.just(1.0), st.floats(0.05, 3.0), st.floats(3.0, 120.0))
policies = st.builds(
    CpuPolicy,
    threshold=st.sampled_from([50.0, 80.0, 95.0]),
    peak_seconds=st.sampled_from([0.0, 1.0, 2.0, 5.0]),
    clear_seconds=st.sampled_from([None, 0.0, 1.0, 4.0]),
)


@st.composite
def traces(draw: st.DrawFn, regular: bool = False) -> list[CpuSample]:
    count = draw(st.integers(0, 150))
    at, out = 0.0, []
    for _ in range(count):
        at += 1.0 if regular else draw(steps)
        value = draw(st.floats(0, 100) | st.sampled_from([79.0, 81.0])) if regular else None
        out.append(CpuSample(at, value if value is not None else draw(cpu_values)))
    return out


def qualifying_runs(trace: Sequence[CpuSample], policy: CpuPolicy) -> list[int]:
    """For a regular trace (1 s, no NaN): the index at which each maximal high run first
    covers peak_seconds, found independently of evaluate."""
    found, cover, hit, previous = [], None, False, None
    for index, sample in enumerate(trace):
        if sample.host_percent >= policy.threshold:
            if cover is None:
                cover, hit = (previous if previous is not None else sample.at), False
            if not hit and sample.at - cover >= policy.peak_seconds - 1e-3:
                found.append(index)
                hit = True
        else:
            cover = None
        previous = sample.at
    return found


@settings(max_examples=200, deadline=None)
@given(traces(), policies)
def test_starts_and_ends_alternate_beginning_with_a_start(
    trace: list[CpuSample], policy: CpuPolicy
) -> None:
    seen = kinds(trace, policy)
    expected = ["cpu_peak_started", "cpu_peak_ended"] * len(seen)
    assert seen == expected[: len(seen)]


@settings(max_examples=200, deadline=None)
@given(traces(), policies)
def test_an_idle_trace_never_notifies(trace: list[CpuSample], policy: CpuPolicy) -> None:
    calm = [CpuSample(s.at, min(s.host_percent, policy.threshold - 0.01)) for s in trace]
    assert kinds(calm, policy) == []


@settings(max_examples=200, deadline=None)
@given(traces(regular=True), policies)
def test_no_more_starts_than_high_runs_long_enough(
    trace: list[CpuSample], policy: CpuPolicy
) -> None:
    starts = [i for i, n in replay(trace, policy)[0] if n.kind == "cpu_peak_started"]
    runs = qualifying_runs(trace, policy)
    assert len(starts) <= len(runs)
    assert set(starts) <= set(runs)  # a start only where a run has just covered peak_seconds
    if policy.clear == 0:
        # Every low sample ends a peak, so each qualifying run starts one, at that sample.
        assert starts == runs


@settings(max_examples=200, deadline=None)
@given(traces(), policies)
def test_the_state_stays_consistent(trace: list[CpuSample], policy: CpuPolicy) -> None:
    notices, state = replay(trace, policy)
    starts = sum(n.kind == "cpu_peak_started" for _, n in notices)
    assert state.peaks == starts
    assert state.in_peak == (len(notices) % 2 == 1)
    for _, notice in notices:
        if notice.kind == "cpu_peak_ended":
            assert notice.data["duration_seconds"] >= 0
            assert notice.data["max_percent"] >= policy.threshold - 0.05
