"""The Grafana dashboard (deploy/kubernetes/base/dashboards/phoenix.json) against what the
application really exports: every query parses as PromQL (Prometheus's grammar, through
promql-parser), every metric it names is in a real scrape of `phoenix up`'s /metrics or is
one of the few the platform provides, and every selector is scoped to the chosen namespace.
Then a real Prometheus scrapes that stack with a ServiceMonitor's target labels and runs
every query, and the journal alerts' expressions, on what it scraped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ports import free_port
from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/kubernetes/base/dashboards/phoenix.json"
# Series the dashboard takes from the platform, not from /metrics: Prometheus's own `up`,
# and kube-state-metrics v2 for the backup CronJob (the same as the PrometheusRule uses).
PLATFORM = {"up", "kube_cronjob_status_last_successful_time"}
# What Grafana fills in before a query reaches Prometheus.
VARIABLES = {"namespace": "phoenix-production", "__rate_interval": "1m", "__range": "6h"}
# The labels the prometheus-operator gives a target of the ServiceMonitor (base/).
TARGET_LABELS = {"namespace": VARIABLES["namespace"], "service": "phoenix", "pod": "phoenix-0"}
RULES = DASHBOARD.parents[1] / "prometheusrule.yaml"
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


def scraped_names(client: httpx.Client) -> set[str]:
    """The sample names of a real `phoenix up`'s /metrics, after traffic of every kind."""
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


@dataclass(frozen=True)
class Scraped:
    """What a real scrape of `phoenix up` holds, and a real Prometheus that scrapes it."""

    names: set[str]
    prometheus: httpx.Client


@contextmanager
def running_prometheus(folder: Path, target_port: int) -> Iterator[httpx.Client]:
    """Prometheus (Debian's package, as scripts/bootstrap --dev installs it) scraping the
    stack every second, with the target labels a ServiceMonitor gives; always stopped."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run scripts/bootstrap --dev (Debian's prometheus)")
    folder.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "phoenix",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{target_port}"],
                        "labels": {**TARGET_LABELS},
                    }
                ],
            }
        ],
    }
    (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    with open(folder / "output.log", "wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def scrapes() -> int | None:
                if process.poll() is not None:
                    raise AssertionError((folder / "output.log").read_text()[-2000:])
                if client.get("/-/ready").status_code != 200:  # still loading
                    return None
                result = query(client, "count_over_time(up[1m])")
                count = int(float(result[0]["value"][1])) if result else 0
                return count if count >= 3 else None  # a rate needs two samples

            eventually(
                scrapes, 60, what="three scrapes of the stack", ignore=(httpx.TransportError,)
            )
            yield client
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def query(client: httpx.Client, promql: str) -> list[dict[str, Any]]:
    """Prometheus's answer to an instant query; an error it reports fails the test."""
    response = client.get("/api/v1/query", params={"query": promql})
    body = response.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    folder = tmp_path_factory.mktemp("dashboard")
    with (
        running_stack(folder / "home", PHOENIX_MIN_WORKERS="2") as stack,
        httpx.Client(base_url=stack.url, timeout=30) as client,
    ):
        names = scraped_names(client)
        with running_prometheus(folder / "prometheus", stack.port) as prometheus:
            yield Scraped(names, prometheus)


@pytest.fixture(scope="module")
def exported(scraped: Scraped) -> set[str]:
    return scraped.names


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


def test_prometheus_runs_every_query_on_the_scraped_series(
    dashboard: dict[str, Any], scraped: Scraped
) -> None:
    # Every query runs (no label-matching error), and each series it selects is there with
    # the target labels a ServiceMonitor gives, unless the platform provides it.
    for where, promql in queries(dashboard):
        query(scraped.prometheus, expand(promql))
        for selector in selectors(promql):
            if selector.name in PLATFORM - {"up"}:
                continue
            # The selector's own target-label matchers (its value filters, like a status,
            # may rightly select nothing in a short run).
            scope = ", ".join(
                f"{m.name}={json.dumps(m.value)}"
                for m in selector.matchers.matchers
                if m.name in TARGET_LABELS and str(m.op) == "MatchOp.Equal"
            )
            scoped = f"{selector.name}{{{scope}}}"
            # (the namespace variable's own query lists them all)
            assert "namespace=" in scoped or where.startswith("variable"), (where, promql)
            assert query(scraped.prometheus, scoped), f"{where}: no series {scoped}"


def test_the_journal_alerts_are_quiet_while_the_store_answers(scraped: Scraped) -> None:
    # Their expressions, evaluated by Prometheus on the real scrape: a healthy pod is
    # scraped and has a lag, so neither fires (the store alert matches `up` and the lag on
    # the same namespace and pod labels, which only a real scrape can show).
    rules = yaml.safe_load(RULES.read_text().replace("NAMESPACE", VARIABLES["namespace"]))
    expressions = {
        rule["alert"]: rule["expr"] for group in rules["spec"]["groups"] for rule in group["rules"]
    }
    assert query(scraped.prometheus, expressions["PhoenixStoreUnreachable"]) == []
    assert query(scraped.prometheus, expressions["PhoenixJournalLag"]) == []
    lag = expressions["PhoenixJournalLag"].replace("> 60", ">= 0")
    [series] = query(scraped.prometheus, lag)
    assert series["metric"] == {"namespace": VARIABLES["namespace"], "pod": "phoenix-0"}
