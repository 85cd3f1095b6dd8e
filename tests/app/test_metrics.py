"""The one-process request figures (plain counts) expose what prometheus_client's own
Counter and Histogram would, sample for sample."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cloud_phoenix.app.metrics import LATENCY, LATENCY_BUCKETS, REQUESTS, Metrics

Sample = tuple[str, tuple[tuple[str, str], ...], float]

observations = st.lists(
    st.tuples(
        st.sampled_from(["/", "/logs", "unmatched"]),
        st.sampled_from(["GET", "POST"]),
        st.sampled_from([200, 404, 500]),
        st.one_of(
            st.sampled_from([0.0, *LATENCY_BUCKETS, 11.0]),  # on the bounds: le is inclusive
            st.floats(min_value=0, max_value=20, allow_nan=False),
        ),
    ),
    max_size=40,
)


def request_samples(text: str) -> set[Sample]:
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        if family.name in ("phoenix_requests", "phoenix_request_duration_seconds")
        for s in family.samples
        if not s.name.endswith("_created")
    }


@settings(max_examples=60, deadline=None)
@given(observations)
def test_plain_counts_render_as_prometheus_client_would(
    seen: list[tuple[str, str, int, float]],
) -> None:
    metrics = Metrics()
    registry = CollectorRegistry()
    requests = Counter(*REQUESTS, ["route", "method", "status"], registry=registry)
    latency = Histogram(*LATENCY, ["route"], buckets=LATENCY_BUCKETS, registry=registry)
    for route, method, status, seconds in seen:
        metrics.observe(route, method, status, seconds)
        requests.labels(route, method, str(status)).inc()
        latency.labels(route).observe(seconds)
    expected = request_samples(generate_latest(registry).decode())
    assert request_samples(metrics.render().decode()) == expected
