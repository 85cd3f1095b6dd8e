"""Prometheus figures of the application, correct when several worker processes serve.

When PROMETHEUS_MULTIPROC_DIR is set (gunicorn with several workers), each process writes
its values to files there and a scrape sums them (the gunicorn master folds the files of dead
workers into an archive: app/metricsfold.py); otherwise the process's own registry serves,
and the per-request figures are plain counts turned into Prometheus families when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from cloud_phoenix.app.metricsfold import collect

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Computed(Collector):
    """Figures computed when scraped (journal lag): one value for the whole host."""

    def __init__(self, read: Callable[[], dict[str, float]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        try:
            values = self._read()
        except Exception:  # a scrape must not fail because the store is down
            return
        for name, value in values.items():
            help_text = name.replace("phoenix_", "").replace("_", " ")
            yield GaugeMetricFamily(name, help_text, value=value)


class _Collected(Collector):
    """Families read before the scrape: every worker's files, read while no fold runs."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


REQUESTS = ("phoenix_requests", "HTTP requests answered, by route, method and status")
LATENCY = ("phoenix_request_duration_seconds", "Time to answer a request, by route")


class _RequestFigures(Collector):
    """Requests by route, method and status, and latency by route, counted in plain dicts
    (one process, one thread: the event loop's) and made Prometheus families when scraped.

    prometheus_client's Counter and Histogram cost about a microsecond a request in locks
    and checks; these a third of that, on the path every request takes."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, tuple[list[int], list[float]]] = {}  # buckets, [sum]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        histogram[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: value <= bound
        histogram[1][0] += seconds

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(*REQUESTS, labels=["route", "method", "status"])
        for (route, method, status), count in list(self.counts.items()):
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(*LATENCY, labels=["route"])
        bounds = [*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"]
        for route, (buckets, total) in list(self.latency.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, buckets, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            latency.add_metric([route], cumulative, sum_value=total[0])
        yield latency


class Metrics:
    """The application's counters, histograms and gauges."""

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self._local: _RequestFigures | None = None
        if multiproc_dir is None:
            self._local = _RequestFigures()
            self.registry.register(self._local)
        else:  # values in files that every worker's scrape sums
            self.requests = Counter(
                *REQUESTS, ["route", "method", "status"], registry=self.registry
            )
            self.latency = Histogram(
                *LATENCY, ["route"], buckets=LATENCY_BUCKETS, registry=self.registry
            )
        self.certificates = Counter(
            "phoenix_certificates_generated",
            "Certificates handed out by /generatecert",
            registry=self.registry,
        )
        self.cert_rejected = Counter(
            "phoenix_certificates_rejected",
            "Certificate requests answered 503 because the wait would be too long",
            registry=self.registry,
        )
        self.spare_keys = Gauge(
            "phoenix_cert_pool_spare_keys",
            "RSA keys generated ahead and waiting in the pool",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.journal_errors = Counter(
            "phoenix_journal_write_errors",
            "Access records that could not be journaled",
            registry=self.registry,
        )
        self.probes = Counter(
            "phoenix_probes",
            "Probes and scrapes of the platform (cloud_phoenix.probes), answered but not "
            "journaled, by kind: header, elb, kubelet, prometheus",
            ["kind"],
            registry=self.registry,
        )
        self._computed: list[Callable[[], dict[str, float]]] = []
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (label children cached: per request)."""
        if method not in METHODS:  # clients choose methods: keep the label set bounded
            method = "other"
        if self._local is not None:
            self._local.observe(route, method, status, seconds)
            return
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def add_computed(self, read: Callable[[], dict[str, float]]) -> None:
        """Register figures computed at scrape time (the same in every process)."""
        self._computed.append(read)
        if self.multiproc_dir is None:
            self.registry.register(_Computed(read))

    def render(self) -> bytes:
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        registry.register(_Collected(collect(self.multiproc_dir)))
        for read in self._computed:
            registry.register(_Computed(read))
        return generate_latest(registry)
