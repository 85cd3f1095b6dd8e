"""The Kubernetes manifests (deploy/kubernetes), offline: every overlay renders with
`kubectl kustomize`; core objects validate against the Kubernetes JSON schemas
(kubernetes-validate, strict); the custom resources (KEDA, prometheus-operator) against the
schemas vendored in deploy/kubernetes/schemas; checkov finds nothing but what the
manifests suppress with a reason; and the objects say what the platform promises (probes,
non-root, read-only root, `phoenix up` with its collector on the pod's journal, scaling at
10 req/s per pod, a daily backup kept 7 days, the CPU peak alert and its route).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cloud_phoenix.app import create_app
from cloud_phoenix.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMAS = KUBERNETES / "schemas"
TOOLS = ROOT / ".venv-tools" / "bin"
KUBERNETES_VERSION = "1.30.0"  # the oldest the README promises
OVERLAYS = ("staging", "production")
HOME = "/var/lib/phoenix"

CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
}

# Run by the tools' interpreter (jsonschema lives there, not in the application's venv):
# reads [[schema file, object], ...] on stdin, prints the errors as a JSON list.
VALIDATE_WITH_SCHEMAS = """
import json, sys
from jsonschema import Draft202012Validator
errors = []
for schema_file, obj in json.load(sys.stdin):
    with open(schema_file) as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    for error in Draft202012Validator(schema).iter_errors(obj):
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {error.message}")
print(json.dumps(errors))
"""


@dataclass(frozen=True)
class Rendered:
    """One overlay, rendered: its namespace, the YAML stream and the objects in it."""

    overlay: str
    namespace: str
    text: str
    objects: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/bootstrap --dev (it installs the validators)")
    return path


def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is missing: the manifests are rendered with `kubectl kustomize`")
    return found


def run(
    command: list[str], timeout: float, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    overlay: str = request.param
    result = run([kubectl(), "kustomize", str(KUBERNETES / "overlays" / overlay)], timeout=120)
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{result.stderr}"
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    [namespace] = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    return Rendered(overlay, namespace, result.stdout, objects)


@pytest.fixture
def deployment(rendered: Rendered) -> dict[str, Any]:
    return rendered.one("Deployment", "phoenix")


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_specs(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in rendered.objects:
        name = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] in {"Deployment", "StatefulSet"}:
            yield name, o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield name, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


# --- validation ---------------------------------------------------------------------------


def test_every_object_is_namespaced_into_the_overlay_and_nothing_is_left_unset(
    rendered: Rendered,
) -> None:
    for o in rendered.objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == rendered.namespace, o["metadata"]
    # Placeholders of the base that each overlay must replace.
    assert "NAMESPACE" not in rendered.text
    assert "set-by-overlay" not in rendered.text
    # No secret is committed: every Secret is created by the operator (README: "Secrets").
    assert rendered.all("Secret") == []


def test_core_objects_validate_against_the_kubernetes_schemas(
    rendered: Rendered, tmp_path: Path
) -> None:
    core = [o for o in rendered.objects if (o["apiVersion"], o["kind"]) not in CUSTOM_RESOURCES]
    stream = tmp_path / f"{rendered.overlay}-core.yaml"
    stream.write_text(yaml.safe_dump_all(core, sort_keys=False))
    result = run(
        [
            str(tool("kubernetes-validate")),
            "--kubernetes-version",
            KUBERNETES_VERSION,
            "--strict",
            "--quiet",
            str(stream),
        ],
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # An object of an unknown kind (a misspelt apiVersion) only warns: make it fail here.
    assert "Couldn't find schema" not in output, output
    assert len(core) >= 10


def validate_with_schemas(pairs: list[tuple[Path, dict[str, Any]]]) -> list[str]:
    result = run(
        [str(tool("python")), "-c", VALIDATE_WITH_SCHEMAS],
        timeout=120,
        stdin=json.dumps([[str(path), obj] for path, obj in pairs]),
    )
    assert result.returncode == 0, result.stderr
    errors: list[str] = json.loads(result.stdout)
    return errors


def schema_for(obj: dict[str, Any]) -> Path:
    group_version = obj["apiVersion"].replace("/", "_")
    return SCHEMAS / f"{group_version}_{obj['kind']}.json"


def test_custom_resources_validate_against_their_vendored_schemas(rendered: Rendered) -> None:
    custom = [o for o in rendered.objects if (o["apiVersion"], o["kind"]) in CUSTOM_RESOURCES]
    assert {(o["apiVersion"], o["kind"]) for o in custom} == CUSTOM_RESOURCES
    assert validate_with_schemas([(schema_for(o), o) for o in custom]) == []


def test_the_vendored_schemas_reject_what_the_api_server_or_the_operator_would(
    rendered: Rendered,
) -> None:
    scaled = json.loads(json.dumps(rendered.one("ScaledObject", "phoenix")))
    scaled["spec"]["minReplicas"] = 2  # the HPA's name of the field, not KEDA's
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 10  # metadata is strings only
    rule = json.loads(json.dumps(rendered.one("PrometheusRule", "phoenix")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "1 minute"
    monitor = json.loads(json.dumps(rendered.one("ServiceMonitor", "phoenix")))
    del monitor["spec"]["selector"]
    errors = validate_with_schemas(
        [(schema_for(scaled), scaled), (schema_for(rule), rule), (schema_for(monitor), monitor)]
    )
    assert any("minReplicas" in e for e in errors), errors
    assert any("threshold" in e for e in errors), errors
    assert any("1 minute" in e for e in errors), errors
    assert any("selector" in e for e in errors), errors


def test_checkov_finds_nothing_but_suppressions_with_a_reason(
    rendered: Rendered, tmp_path: Path
) -> None:
    folder = tmp_path / rendered.overlay
    folder.mkdir()
    (folder / "rendered.yaml").write_text(rendered.text)
    result = run(
        [
            str(tool("checkov")),
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-download",  # offline: no call to the vendor's API for guidelines
            # JSON, not --quiet --compact: the report keeps the suppressions and their reasons.
            "--output",
            "json",
        ],
        timeout=600,
    )
    assert result.stdout.strip(), result.stderr
    report = json.loads(result.stdout)
    [report] = report if isinstance(report, list) else [report]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == [], "\n".join(failed)
    assert result.returncode == 0, result.stderr
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 100, summary
    for check in report["results"]["skipped_checks"]:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason) > 20, f"{check['check_id']} on {check['resource']} has no reason"


# --- what the objects promise ---------------------------------------------------------------


def test_the_application_is_probed_on_health_and_ready(deployment: dict[str, Any]) -> None:
    [app] = deployment["spec"]["template"]["spec"]["containers"]
    assert app["name"] == "phoenix"
    assert app["args"] == ["up"]
    # Readiness never asks the database (/ready does): an outage must not take every pod
    # out of the Service, the journal absorbs it and the alerts say so.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert app[probe]["httpGet"]["path"] == "/health", probe
    assert {p["name"]: p["containerPort"] for p in app["ports"]} == {"http": 8080}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert app[probe]["httpGet"]["port"] == "http"
    env = env_of(app)
    assert env["PORT"] == "8080"
    assert env["PHOENIX_HOST"] == "0.0.0.0"
    assert env["PHOENIX_HOME"] == HOME
    # A /crash leaves a sibling worker for the in-container edge to retry on.
    assert int(env["PHOENIX_MIN_WORKERS"]) >= 2
    assert int(env["PHOENIX_MAX_WORKERS"]) >= int(env["PHOENIX_MIN_WORKERS"])
    assert env["PHOENIX_BACKUP_AT"] == "off"  # the CronJob backs up
    # Every part of the stack on the container's output, one JSON object a line.
    assert env["PHOENIX_LOG_FORMAT"] == "json"


def test_a_pod_is_removed_only_once_its_journal_is_in_the_database_or_a_bound_passed(
    deployment: dict[str, Any],
) -> None:
    spec = deployment["spec"]["template"]["spec"]
    [app] = spec["containers"]
    command = app["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["sh", "-c"]
    wait = re.fullmatch(r"sleep (\d+) && exec phoenix collect --drain (\d+)", command[2])
    assert wait, command
    endpoints, drain = int(wait.group(1)), int(wait.group(2))
    assert endpoints >= 5  # the endpoints are removed before the stack stops serving
    assert 60 <= drain <= 600  # long enough for a short outage, bounded for a drain
    # The grace period holds the preStop and the stack's own stop after it.
    assert spec["terminationGracePeriodSeconds"] >= endpoints + drain + 30


def test_phoenix_up_collects_its_journal_on_the_pods_emptydir(deployment: dict[str, Any]) -> None:
    spec = deployment["spec"]["template"]["spec"]
    # No sidecar: the stack's own collector tails the journal (a second one would be
    # correct, positions commit with batches, but wasteful).
    assert "initContainers" not in spec
    [app] = spec["containers"]
    assert "PHOENIX_SERVE_COLLECTOR" not in env_of(app)
    # The volume holding $PHOENIX_HOME/journal: the deepest mount above it.
    mounts = [
        m
        for m in app["volumeMounts"]
        if f"{HOME}/journal".startswith(m["mountPath"].rstrip("/") + "/")
    ]
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    assert not mount.get("readOnly", False)
    assert "subPath" not in mount
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def test_every_container_runs_as_non_root_on_a_read_only_root(rendered: Rendered) -> None:
    specs = dict(pod_specs(rendered))
    expected = {"Deployment/phoenix", "CronJob/phoenix-backup"}
    if rendered.overlay == "staging":
        expected.add("StatefulSet/mongodb")
    assert set(specs) == expected
    for name, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in containers(spec):
            where = f"{name} {container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert context.get("privileged", False) is False, where
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[bound]), f"{where} {bound}"
            # Python writes to /tmp (tempfile): it must be a volume, the root is read-only.
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, where
    if "Deployment/phoenix" in specs:
        assert specs["Deployment/phoenix"]["securityContext"]["runAsUser"] == 10001


def test_overlays_set_their_own_image_tag_resources_and_host(rendered: Rendered) -> None:
    expected = {
        "staging": ("0.1.0", "phoenix.staging.example.com", "704Mi"),
        "production": ("0.1.0", "phoenix.example.com", "1280Mi"),
    }[rendered.overlay]
    tag, host, memory = expected
    for name, spec in pod_specs(rendered):
        for container in containers(spec):
            if "cloud-phoenix" in container["image"]:
                assert container["image"] == f"ghcr.io/OWNER/cloud-phoenix:{tag}", name
    [app] = rendered.one("Deployment", "phoenix")["spec"]["template"]["spec"]["containers"]
    assert app["resources"]["limits"]["memory"] == memory
    for ingress in rendered.all("Ingress"):
        assert [r["host"] for r in ingress["spec"]["rules"]] == [host]
        assert ingress["spec"]["tls"][0]["hosts"] == [host]


def test_the_service_ingress_and_budget_select_the_application_pods(
    rendered: Rendered, deployment: dict[str, Any]
) -> None:
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = rendered.one("Service", "phoenix")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    [port] = service["spec"]["ports"]
    assert (port["name"], port["targetPort"]) == ("http", "http")
    budget = rendered.one("PodDisruptionBudget", "phoenix")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    scaled = rendered.one("ScaledObject", "phoenix")
    # The budget lets one pod go: there must be another to serve meanwhile.
    assert scaled["spec"]["minReplicaCount"] >= 2
    for ingress in rendered.all("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert (backend["name"], backend["port"]["name"]) == ("phoenix", "http")


def test_a_crash_is_never_retried_on_another_pod(rendered: Rendered) -> None:
    crash = rendered.one("Ingress", "phoenix-crash")
    [rule] = crash["spec"]["rules"]
    assert rule["http"]["paths"] == [
        {
            "path": "/crash",
            "pathType": "Exact",
            "backend": {"service": {"name": "phoenix", "port": {"name": "http"}}},
        }
    ]
    annotations = crash["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-next-upstream"] == "off"
    main = rendered.one("Ingress", "phoenix")
    retry = main["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-next-upstream"]
    assert "error" in retry.split()
    # nginx's `timeout` covers a slow answer too: a long /generatecert would run 3 times.
    assert "timeout" not in retry.split()


def test_scaling_targets_10_requests_per_second_per_pod(rendered: Rendered) -> None:
    scaled = rendered.one("ScaledObject", "phoenix")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "phoenix",
    }
    assert "replicas" not in rendered.one("Deployment", "phoenix")["spec"]  # the HPA's to set
    assert spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus"
    # AverageValue: the HPA divides the query (the total rate) by the pods it has.
    assert trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == "10"
    query = trigger["metadata"]["query"]
    assert query.startswith("sum(rate(phoenix_requests_total{")
    assert f'namespace="{rendered.namespace}"' in query
    assert 'service="phoenix"' in query
    assert "[1m]" in query
    window = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert window["stabilizationWindowSeconds"] == 60  # PHOENIX_SCALE_IN_WINDOW


def test_the_backup_runs_daily_onto_a_volume_and_keeps_7_days(rendered: Rendered) -> None:
    cron = rendered.one("CronJob", "phoenix-backup")
    assert re.fullmatch(r"\d+ \d+ \* \* \*", cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [backup] = spec["containers"]
    assert backup["args"] == ["backup"]
    env = env_of(backup)
    assert env["PHOENIX_BACKUP_RETENTION_DAYS"] == "7"
    assert env["PHOENIX_HOME"] == HOME
    assert env["DB_CONNECTION_STRING"]["secretKeyRef"]["name"] == "phoenix-db"
    [home] = [m for m in backup["volumeMounts"] if m["mountPath"] == HOME]
    [volume] = [v for v in spec["volumes"] if v["name"] == home["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert rendered.one("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_journal_disk_alerts_come_before_it_is_full(
    rendered: Rendered, deployment: dict[str, Any], tmp_path: Path
) -> None:
    """The journal's volume: an alert on the file system and one on the emptyDir's
    sizeLimit (an emptyDir reports the node's file system), on figures /metrics exports."""
    [group] = [
        g
        for g in rendered.one("PrometheusRule", "phoenix")["spec"]["groups"]
        if g["name"] == "phoenix.journal"
    ]
    rules = {rule["alert"]: rule["expr"] for rule in group["rules"]}
    settings = Settings.from_env({"PHOENIX_HOME": str(tmp_path), "PHOENIX_ACCESS_LOG": "false"})
    with TestClient(create_app(settings)) as client:
        client.get("/health")  # a journal file, so that its figures are there
        exported = set(re.findall(r"^(phoenix_\w+) ", client.get("/metrics").text, re.M))
    for alert, expr in rules.items():
        used = set(re.findall(r"phoenix_\w+", expr))
        assert used and used <= exported, (alert, used - exported)
        assert f'namespace="{rendered.namespace}"' in expr, alert
    assert "< 0.15 * phoenix_journal_disk_size_bytes" in rules["PhoenixJournalDiskFilling"]

    pod = deployment["spec"]["template"]["spec"]
    [container] = [c for c in containers(pod) if c["name"] == "phoenix"]
    [home] = [m for m in container["volumeMounts"] if m["mountPath"] == HOME]
    [limit] = [v["emptyDir"]["sizeLimit"] for v in pod["volumes"] if v["name"] == home["name"]]
    gib = re.fullmatch(r"([0-9]+)Gi", limit)
    assert gib, limit
    expected = f'phoenix_journal_bytes{{namespace="{rendered.namespace}"}} > 0.75 * {gib[1]} *'
    assert rules["PhoenixJournalNearSizeLimit"].startswith(expected)


def test_prometheus_scrapes_the_pods_and_alerts_on_cpu_peaks(rendered: Rendered) -> None:
    monitor = rendered.one("ServiceMonitor", "phoenix")
    service = rendered.one("Service", "phoenix")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")

    rules = {
        r["alert"]: r
        for group in rendered.one("PrometheusRule", "phoenix")["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    }
    assert {
        "PhoenixCPUPeak",
        "PhoenixBackupMissing",
        "PhoenixJournalLag",
        "PhoenixStoreUnreachable",
    } <= set(rules)
    peak = rules["PhoenixCPUPeak"]
    assert "container_cpu_usage_seconds_total" in peak["expr"]
    assert ">= 0.8" in peak["expr"]  # PHOENIX_CPU_THRESHOLD 80 %
    assert "phoenix_journal_lag_seconds" in rules["PhoenixJournalLag"]["expr"]
    for rule in rules.values():
        # Every namespace an expression names is the overlay's (none is left to the base).
        scopes = re.findall(r'namespace="([^"]*)"', rule["expr"])
        assert scopes and set(scopes) == {rendered.namespace}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}

    route = rendered.one("AlertmanagerConfig", "phoenix")["spec"]
    receivers = {r["name"]: r for r in route["receivers"]}
    assert route["route"]["receiver"] in receivers
    [matcher] = route["route"]["matchers"]
    assert matcher["matchType"] == "=~"
    assert all(re.fullmatch(matcher["value"], alert) for alert in rules)
    [webhook] = receivers[route["route"]["receiver"]]["webhookConfigs"]
    assert webhook["sendResolved"] is True  # one notice when a peak starts, one when it ends


def test_the_database_comes_from_secrets_the_readme_explains(rendered: Rendered) -> None:
    referenced: set[str] = set()
    for _, spec in pod_specs(rendered):
        for container in containers(spec):
            for value in env_of(container).values():
                if isinstance(value, dict) and "secretKeyRef" in value:
                    referenced.add(value["secretKeyRef"]["name"])
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
    for ingress in rendered.all("Ingress"):
        referenced.update(tls["secretName"] for tls in ingress["spec"].get("tls", []))
    for account in rendered.all("ServiceAccount"):
        referenced.update(s["name"] for s in account.get("imagePullSecrets", []))
    for receiver in rendered.one("AlertmanagerConfig", "phoenix")["spec"]["receivers"]:
        referenced.update(w["urlSecret"]["name"] for w in receiver.get("webhookConfigs", []))
    statefulsets = rendered.all("StatefulSet")
    if rendered.overlay == "staging":
        [mongodb] = statefulsets
        [container] = mongodb["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        assert env["MONGO_INITDB_ROOT_USERNAME_FILE"].startswith("/etc/mongodb-auth/")
        assert env["MONGO_INITDB_ROOT_PASSWORD_FILE"].startswith("/etc/mongodb-auth/")
        assert mongodb["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        assert referenced >= {"phoenix-db", "phoenix-mongodb"}
    else:
        assert statefulsets == []  # production's MongoDB is outside the cluster
        assert "phoenix-db" in referenced
    readme = (KUBERNETES / "README.md").read_text()
    for secret in referenced:
        assert re.search(rf"create secret (generic|tls|docker-registry) {secret}\b", readme), (
            f"deploy/kubernetes/README.md should say how to create the Secret {secret}"
        )


def test_each_pod_journals_under_its_own_name() -> None:
    text = (
        Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base" / "deployment.yaml"
    ).read_text()
    assert "PHOENIX_INSTANCE" in text and "fieldPath: metadata.name" in text


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run scripts/bootstrap --dev (Debian's prometheus)")
    return found


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


def test_the_alerts_fire_when_they_should_and_only_then(rendered: Rendered, tmp_path: Path) -> None:
    """promtool evaluates the overlay's rules on made-up series, minute by minute."""
    groups = json.loads(json.dumps(rendered.one("PrometheusRule", "phoenix")["spec"]["groups"]))
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # promtool compares them whole: the labels suffice
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    checked = run([promtool(), "check", "rules", str(tmp_path / "rules.yaml")], timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    ns = rendered.namespace
    backup = {"namespace": ns, "cronjob": "phoenix-backup", "job": "kube-state-metrics"}
    target = {"namespace": ns, "service": "phoenix", "job": "phoenix"}
    minutes = "x2000"  # a sample a minute for about 33 h
    cases = [
        {  # never succeeded: kube-state-metrics has no last-success series at all
            "interval": "1m",
            "input_series": [series("kube_cronjob_created", "0" + minutes, **backup)],
            "alert_rule_test": [
                {"eval_time": "20h", "alertname": "PhoenixBackupMissing", "exp_alerts": []},
                {
                    "eval_time": "28h",
                    "alertname": "PhoenixBackupMissing",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "namespace": ns,
                                "cronjob": "phoenix-backup",
                                "severity": "critical",
                            }
                        }
                    ],
                },
            ],
        },
        {  # succeeded 27 h ago, created long before: missing; succeeded 1 h ago: fine
            "interval": "1m",
            "input_series": [
                series("kube_cronjob_created", "0" + minutes, **backup),
                series("kube_cronjob_status_last_successful_time", "3600" + minutes, **backup),
            ],
            "alert_rule_test": [
                {"eval_time": "2h", "alertname": "PhoenixBackupMissing", "exp_alerts": []},
                {
                    "eval_time": "28h",
                    "alertname": "PhoenixBackupMissing",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "namespace": ns,
                                "cronjob": "phoenix-backup",
                                "severity": "critical",
                            }
                        }
                    ],
                },
            ],
        },
        {  # p1 falls behind, p2 keeps up, p3 loses its store, p4 is not scraped at all
            "interval": "1m",
            "input_series": [
                series("up", "1x60", pod="p1", **target),
                series("phoenix_journal_lag_seconds", "0+20x60", pod="p1", **target),
                series("up", "1x60", pod="p2", **target),
                series("phoenix_journal_lag_seconds", "0x60", pod="p2", **target),
                series("up", "1x60", pod="p3", **target),
                series("phoenix_journal_lag_seconds", "0 0 0 _x57", pod="p3", **target),
                series("up", "0x60", pod="p4", **target),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "PhoenixJournalLag", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "PhoenixJournalLag",
                    "exp_alerts": [
                        {"exp_labels": {"namespace": ns, "pod": "p1", "severity": "warning"}}
                    ],
                },
                {"eval_time": "3m", "alertname": "PhoenixStoreUnreachable", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "PhoenixStoreUnreachable",
                    "exp_alerts": [
                        {"exp_labels": {"namespace": ns, "pod": "p3", "severity": "critical"}}
                    ],
                },
            ],
        },
        {  # p1's edge drops 5 lines at minute 10 and none after; p2's none at all
            "interval": "1m",
            "input_series": [
                series("phoenix_edge_dropped_logs_total", "0x9 5x30 0x30", pod="p1", **target),
                series("phoenix_edge_dropped_logs_total", "0x70", pod="p2", **target),
            ],
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "PhoenixEdgeDroppingLogs", "exp_alerts": []},
                {
                    "eval_time": "12m",
                    "alertname": "PhoenixEdgeDroppingLogs",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "namespace": ns,
                                "pod": "p1",
                                "service": "phoenix",
                                "job": "phoenix",
                                "severity": "warning",
                            }
                        }
                    ],
                },
                {"eval_time": "35m", "alertname": "PhoenixEdgeDroppingLogs", "exp_alerts": []},
            ],
        },
    ]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_a_configmap_the_grafana_sidecar_loads(rendered: Rendered) -> None:
    dashboard = rendered.one("ConfigMap", "phoenix-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    [(key, text)] = dashboard["data"].items()
    assert key == "phoenix.json"
    assert text == (KUBERNETES / "base" / "dashboards" / "phoenix.json").read_text()
    assert json.loads(text)["uid"] == "cloud-phoenix"


def test_one_kustomize_edit_set_image_line_points_every_container_at_the_image(
    tmp_path: Path,
) -> None:
    # What `kustomize edit set image ghcr.io/OWNER/cloud-phoenix=ghcr.io/acme/cloud-phoenix:SHA`
    # writes into the overlay (no kustomize binary here: kubectl only builds).
    copy = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, copy)
    overlay = copy / "overlays" / "production" / "kustomization.yaml"
    kustomization = yaml.safe_load(overlay.read_text())
    sha = "0123456789abcdef0123456789abcdef01234567"
    kustomization["images"] = [
        {
            "name": "ghcr.io/OWNER/cloud-phoenix",
            "newName": "ghcr.io/acme/cloud-phoenix",
            "newTag": sha,
        }
    ]
    overlay.write_text(yaml.safe_dump(kustomization, sort_keys=False))
    result = run([kubectl(), "kustomize", str(overlay.parent)], timeout=120)
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    rendered = Rendered("production", "phoenix-production", result.stdout, objects)
    images = {
        name: container["image"]
        for name, spec in pod_specs(rendered)
        for container in containers(spec)
        if "mongo" not in container["image"]
    }
    assert set(images) == {"Deployment/phoenix", "CronJob/phoenix-backup"}
    assert set(images.values()) == {f"ghcr.io/acme/cloud-phoenix:{sha}"}
    # Both pull with the ServiceAccount's pull secret.
    [account] = rendered.all("ServiceAccount")
    assert account["imagePullSecrets"] == [{"name": "phoenix-ghcr"}]
    for name, spec in pod_specs(rendered):
        assert spec["serviceAccountName"] == account["metadata"]["name"], name
