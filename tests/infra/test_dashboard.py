"""The Grafana dashboard (deploy/kubernetes/base/dashboards/phoenix.json) against what the
application really exports: every query parses as PromQL (Prometheus's grammar, through
promql-parser), every metric it names is in a real scrape of `phoenix up`'s /metrics or is
one of the few the platform provides, and every selector is scoped to the chosen namespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/kubernetes/base/dashboards/phoenix.json"
# Series the dashboard takes from the platform, not from /metrics: Prometheus's own `up`,
# and kube-state-metrics v2 for the backup CronJob (the same as the PrometheusRule uses).
PLATFORM = {"up", "kube_cronjob_status_last_successful_time"}
# What Grafana fills in before a query reaches Prometheus.
VARIABLES = {"namespace": "phoenix-production", "__rate_interval": "1m", "__range": "6h"}
LABEL_VALUES = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>[a-zA-Z_]\w*)\)")
# What the issue asks the dashboard to show, by the series that show it.
SHOWN = {
    "request rate and errors": "phoenix_requests_total",
    "latency": "phoenix_request_duration_seconds_bucket",
    "replicas": "up",
    "workers": "phoenix_workers_running",
    "journal lag": "phoenix_journal_lag_seconds",
    "certificates": "phoenix_certificates_generated_total",
    "CPU peaks": "phoenix_cpu_peaks_total",
    "age of the last backup": "kube_cronjob_status_last_successful_time",
}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))  # a collapsed row holds its panels


def expand(query: str) -> str:
    """The query as Grafana sends it: $name and ${name} replaced by the variable's value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown variable ${name} in {query}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def selectors(query: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expand(query)), visit)
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable's selector."""
    found = [
        (f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.fullmatch(variable["query"]["query"])
            assert match, variable
            found.append((f"variable {variable['name']}", match.group("selector")))
    return found


def scraped_names(home: Path) -> set[str]:
    """The sample names of a real `phoenix up`'s /metrics, after traffic of every kind."""
    with (
        running_stack(home, PHOENIX_MIN_WORKERS="2") as stack,
        httpx.Client(base_url=stack.url, timeout=30) as client,
    ):
        for path in ("/", "/generatecert", "/no-such-page", "/health"):
            client.get(path)

        def scrape() -> set[str] | None:
            response = client.get("/metrics")
            if response.status_code != 200:  # a worker still starting
                return None
            names = {
                sample.name
                for family in text_string_to_metric_families(response.text)
                for sample in family.samples
            }
            # The supervisor's figures appear once its status file is written.
            return names if "phoenix_workers_running" in names else None

        return eventually(scrape, 30, what="the supervisor's figures in /metrics")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    return scraped_names(tmp_path_factory.mktemp("dashboard") / "home")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_every_query_names_only_metrics_that_are_exported(
    dashboard: dict[str, Any], exported: set[str]
) -> None:
    used: set[str] = set()
    for where, query in queries(dashboard):
        for selector in selectors(query):
            assert selector.name, f"{where}: a selector without a metric name: {query}"
            used.add(selector.name)
            assert selector.name in exported | PLATFORM, (
                f"{where}: {selector.name} is not in a scrape of /metrics: {sorted(exported)}"
            )
    for what, name in SHOWN.items():
        assert name in used, f"the dashboard should show {what} ({name})"


def test_every_selector_is_scoped_to_the_chosen_namespace(dashboard: dict[str, Any]) -> None:
    for where, query in queries(dashboard):
        if where.startswith("variable"):
            continue  # the variable lists the namespaces
        for selector in selectors(query):
            scope = {(m.name, str(m.op), m.value) for m in selector.matchers.matchers}
            assert ("namespace", "MatchOp.Equal", VARIABLES["namespace"]) in scope, (where, query)


def test_a_query_that_names_a_metric_nobody_exports_is_caught(exported: set[str]) -> None:
    # The check bites: a misspelt name, and a query Prometheus would not parse.
    [selector] = selectors('sum(rate(phoenix_request_total{namespace="$namespace"}[1m]))')
    assert selector.name not in exported | PLATFORM
    with pytest.raises(ValueError):
        selectors("sum(rate(phoenix_requests_total[1m])")


def test_every_panel_reads_the_chosen_prometheus(dashboard: dict[str, Any]) -> None:
    [variable] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    for panel in panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]
        assert panel["targets"], panel["title"]
