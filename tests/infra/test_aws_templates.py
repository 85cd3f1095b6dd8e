"""The AWS deployment (deploy/aws): cfn-lint and checkov on the CloudFormation template,
offline, then what the template promises read out of it (issue 5's figures, issue 14's one
command, deploy path, alarms and scaling), and shellcheck on the buildspec."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_phoenix import exitcodes
from cloud_phoenix.app.routes import CRASH_EXIT_CODE
from tests.fixtures.ports import free_port
from tests.fixtures.server import running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
AWS = ROOT / "deploy" / "aws"
TOOLS = ROOT / ".venv-tools" / "bin"
# One template, one stack: `aws cloudformation deploy` creates everything.
TEMPLATE = "phoenix.yaml"
TEMPLATES = (TEMPLATE,)
BUILDSPEC = AWS / "buildspec.yml"
README = AWS / "README.md"
DEPLOY_WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
HOME = "/var/lib/phoenix"

# The validators must work without a network: every attempt goes to a closed local port.
OFFLINE = {
    **os.environ,
    **{name: "http://127.0.0.1:9" for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy")},
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}

# cfn-lint's own YAML reader: it knows the short tags (!Ref, !Sub, !GetAtt ...) and gives
# them back in their long form ({"Fn::Sub": ...}), as CloudFormation reads them.
DECODE = """
import json, sys
from cfnlint.decode import decode
out = {}
for path in sys.argv[1:]:
    template, errors = decode(path)
    if errors:
        sys.exit(path + ": " + "; ".join(str(e) for e in errors))
    out[path] = template
json.dump(out, sys.stdout)
"""


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/bootstrap --dev", pytrace=False)
    return path


def run(args: list[str | Path], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
        env=OFFLINE,
    )


def decode(paths: list[Path]) -> dict[str, Any]:
    result = run([tool("python"), "-c", DECODE, *paths])
    assert result.returncode == 0, result.stderr
    decoded: dict[str, Any] = json.loads(result.stdout)
    return {Path(path).name: template for path, template in decoded.items()}


@pytest.fixture(scope="module")
def stacks() -> dict[str, Any]:
    """The template and the buildspec, by file name."""
    return decode([*(AWS / name for name in TEMPLATES), BUILDSPEC])


@pytest.fixture(scope="module")
def template(stacks: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = stacks[TEMPLATE]
    return found


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def the(template: dict[str, Any], kind: str) -> dict[str, Any]:
    """The properties of the one resource of this kind."""
    [resource] = resources(template, kind).values()
    properties: dict[str, Any] = resource["Properties"]
    return properties


def properties(template: dict[str, Any], name: str) -> dict[str, Any]:
    """The properties of the resource of this name."""
    found: dict[str, Any] = template["Resources"][name]["Properties"]
    return found


def walk(node: Any) -> Iterator[Any]:
    yield node
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        yield from walk(child)


def suppressions(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    """(resource, check id) -> the written reason, from Metadata.checkov.skip."""
    found = {}
    for name, resource in template["Resources"].items():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            found[(name, skip["id"])] = skip.get("comment", "")
    return found


def checkov_json(folder: Path) -> dict[str, Any]:
    result = run(
        [
            tool("checkov"),
            *("-d", folder, "--framework", "cloudformation", "--skip-download"),
            *("--compact", "-o", "json"),
        ]
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# ------------------------------------------------------------------------ the validators


def test_every_template_is_listed_here_so_none_escapes_the_validators() -> None:
    assert sorted(p.name for p in AWS.glob("*.yaml")) == sorted(TEMPLATES)
    assert not list(AWS.glob("*.json")), "templates are YAML here"


@pytest.mark.parametrize("name", TEMPLATES)
def test_cfn_lint_passes_offline(name: str) -> None:
    result = run([tool("cfn-lint"), "--regions", "eu-west-1", "us-east-1", "--", AWS / name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_no_failed_check() -> None:
    result = run(
        [
            tool("checkov"),
            *("-d", "deploy/aws", "--framework", "cloudformation"),
            *("--quiet", "--compact", "--skip-download"),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+)", result.stdout)
    assert summary, result.stdout
    assert int(summary[1]) > 100, "checkov read (almost) nothing"
    assert int(summary[2]) == 0, result.stdout


def test_checkov_reads_every_template() -> None:
    report = checkov_json(AWS)
    assert report["summary"]["parsing_errors"] == 0
    scanned = {Path(c["file_path"]).name for c in report["results"]["passed_checks"]}
    assert scanned == set(TEMPLATES)


def test_every_suppression_gives_its_reason_and_is_still_needed(
    stacks: dict[str, Any], tmp_path: Path
) -> None:
    """Without the suppressions, exactly the suppressed checks fail: none is stale."""
    suppressed = set()
    for name in TEMPLATES:
        template = copy.deepcopy(stacks[name])
        for (resource, check), reason in suppressions(template).items():
            assert len(reason.split()) >= 8, f"{name} {resource} {check}: say why"
            suppressed.add((name, resource, check))
            template["Resources"][resource]["Metadata"].pop("checkov", None)
        (tmp_path / name.replace(".yaml", ".json")).write_text(json.dumps(template))
    assert suppressed, "expected the documented suppressions (ALB port 80, log bucket)"

    failed = {
        (Path(c["file_path"]).stem + ".yaml", c["resource"].split(".", 1)[1], c["check_id"])
        for c in checkov_json(tmp_path)["results"]["failed_checks"]
    }
    assert failed == suppressed


# ------------------------------------------------------------------------ network


def test_the_vpc_spans_two_zones_public_and_private(stacks: dict[str, Any]) -> None:
    network = stacks[TEMPLATE]
    subnets = resources(network, "AWS::EC2::Subnet")
    zones = {
        name: s["Properties"]["AvailabilityZone"]["Fn::Select"][0] for name, s in subnets.items()
    }
    assert zones == {
        "PublicSubnetA": 0,
        "PublicSubnetB": 1,
        "PrivateSubnetA": 0,
        "PrivateSubnetB": 1,
    }
    assert len(resources(network, "AWS::EC2::NatGateway")) == 2, "one NAT gateway per zone"
    assert all(
        s["Properties"].get("MapPublicIpOnLaunch") in (None, False) for s in subnets.values()
    )
    assert the(network, "AWS::EC2::FlowLog")["TrafficType"] == "ALL"


def references(node: Any, names: set[str]) -> set[str]:
    """The names among `names` that a template node refers to: Ref, Fn::GetAtt, the ${...}
    of Fn::Sub. Both branches of an Fn::If count, as CloudFormation waits on either."""
    found = set()
    for child in walk(node):
        if not isinstance(child, dict):
            continue
        if isinstance(child.get("Ref"), str):
            found.add(child["Ref"])
        attribute = child.get("Fn::GetAtt")
        if attribute is not None:
            found.add(attribute[0] if isinstance(attribute, list) else attribute.split(".")[0])
        sub = child.get("Fn::Sub")
        if sub is not None:
            text = sub if isinstance(sub, str) else sub[0]
            found.update(re.findall(r"\$\{([A-Za-z0-9]+)", text))
    return found & names


def waits_for(template: dict[str, Any], name: str) -> set[str]:
    """Every resource that CloudFormation makes before `name`: its DependsOn and its
    references (Metadata included), followed to the end."""
    resources_ = template["Resources"]
    names = set(resources_)
    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = resources_[todo.pop()]
        depends = resource.get("DependsOn", [])
        direct = ({depends} if isinstance(depends, str) else set(depends)) | references(
            resource, names
        )
        for other in direct - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_one_stack_with_no_imports_and_nothing_waiting_for_itself(
    template: dict[str, Any],
) -> None:
    """One template: no Fn::ImportValue, no stack-name parameters, no cycle (cfn-lint checks
    every reference; a cycle through the first image would only show on deploy)."""
    keys = {k for node in walk(template) if isinstance(node, dict) for k in node}
    assert "Fn::ImportValue" not in keys
    assert not [o for o in template["Outputs"].values() if "Export" in o]
    assert not {p for p in template["Parameters"] if p.endswith("Stack")}
    for name in template["Resources"]:
        assert name not in waits_for(template, name), f"{name} waits for itself"


def test_the_pipeline_can_run_before_the_service_exists(template: dict[str, Any]) -> None:
    """The service waits for the first image, which the pipeline's first build makes: the
    pipeline and its build must not wait for the service (they name it instead)."""
    service_side = {"Service", "FirstImage", "ServiceCanStart", "ScalableTarget"}
    for name in ("Pipeline", "BuildProject", "PipelineRole", "BuildRole"):
        assert not waits_for(template, name) & service_side, name
    assert properties(template, "Cluster")["ClusterName"] == {"Ref": "AWS::StackName"}
    assert properties(template, "Service")["ServiceName"] == {"Ref": "AWS::StackName"}
    [deploy] = properties(template, "Pipeline")["Stages"][2]["Actions"]
    assert deploy["Configuration"]["ClusterName"] == {"Ref": "AWS::StackName"}
    assert deploy["Configuration"]["ServiceName"] == {"Ref": "AWS::StackName"}


def test_the_service_waits_for_the_pipelines_first_image(template: dict[str, Any]) -> None:
    """Created without an ImageTag, the stack waits for the first build's signal, and the
    task runs the tag that build adds, which the registry keeps."""
    resources_ = template["Resources"]
    assert resources_["FirstImage"]["Type"] == "AWS::CloudFormation::WaitCondition"
    assert resources_["FirstImage"]["Condition"] == "WaitsForFirstImage"
    assert "FirstImage" in waits_for(template, "Service")
    waiting = template["Conditions"]["WaitsForFirstImage"]["Fn::And"]
    assert {"Condition": "DeploysWithPipeline"} in waiting
    build_env = {
        v["Name"]: v["Value"]
        for v in properties(template, "BuildProject")["Environment"]["EnvironmentVariables"]
    }
    assert build_env["FIRST_IMAGE_SIGNAL_URL"] == {
        "Fn::If": ["WaitsForFirstImage", {"Ref": "FirstImageHandle"}, ""]
    }
    image = containers({TEMPLATE: template})["app"]["Image"]["Fn::Sub"]
    tag = image[1]["Tag"]["Fn::If"]
    assert tag[:2] == ["HasImageTag", {"Ref": "ImageTag"}]
    assert tag[2] == build_env["FIRST_IMAGE_TAG"]
    rules = json.loads(
        properties(template, "Repository")["LifecyclePolicy"]["LifecyclePolicyText"][
            "Fn::Sub"
        ].replace("${KeepImages}", "30")
    )["rules"]
    keeps = [r for r in rules if r["selection"].get("tagPrefixList") == [tag[2]]]
    assert keeps and keeps[0]["selection"]["countNumber"] == 1
    assert keeps[0]["rulePriority"] < rules[-1]["rulePriority"]


def test_the_first_build_signals_and_waits_for_the_service(stacks: dict[str, Any]) -> None:
    post_build = "\n".join(stacks["buildspec.yml"]["phases"]["post_build"]["commands"])
    assert '"$FIRST_IMAGE_SIGNAL_URL"' in post_build
    assert "aws ecs wait services-stable" in post_build
    assert post_build.index("docker push") < post_build.index("FIRST_IMAGE_SIGNAL_URL")


# ------------------------------------------------------------------------ edge and service


def test_the_alb_checks_health_every_10_s_and_drops_a_target_after_2_failures(
    stacks: dict[str, Any],
) -> None:
    group = the(stacks[TEMPLATE], "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert group["HealthCheckPath"] == "/health"
    assert group["HealthCheckIntervalSeconds"] == 10
    assert group["UnhealthyThresholdCount"] == 2
    assert group["HealthCheckTimeoutSeconds"] < 10
    assert (group["TargetType"], group["Port"]) == ("ip", 8080)


def test_https_only_with_a_certificate_and_then_http_redirects(stacks: dict[str, Any]) -> None:
    app = stacks[TEMPLATE]
    listeners = resources(app, "AWS::ElasticLoadBalancingV2::Listener")
    https = listeners["HttpsListener"]
    assert https["Condition"] == "HasCertificate"
    assert https["Properties"]["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    [action] = listeners["HttpListener"]["Properties"]["DefaultActions"]
    condition, with_certificate, without = action["Fn::If"]
    assert condition == "HasCertificate"
    assert with_certificate["RedirectConfig"]["Protocol"] == "HTTPS"
    assert without["Type"] == "forward"
    attributes = {
        a["Key"]: a["Value"]
        for a in the(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")["LoadBalancerAttributes"]
    }
    assert attributes["access_logs.s3.enabled"] == "true"


def test_the_alb_log_writers_cover_the_same_regions(stacks: dict[str, Any]) -> None:
    app = stacks[TEMPLATE]
    listed = {
        equals["Fn::Equals"][1]
        for group in app["Conditions"]["ElbLogAccountRegion"]["Fn::Or"]
        for equals in group["Fn::Or"]
    }
    assert listed == set(app["Mappings"]["ElbLogAccount"])
    assert all(re.fullmatch(r"\d{12}", v["Id"]) for v in app["Mappings"]["ElbLogAccount"].values())


def test_the_service_rolls_back_a_failing_deployment(stacks: dict[str, Any]) -> None:
    service = the(stacks[TEMPLATE], "AWS::ECS::Service")
    deployment = service["DeploymentConfiguration"]
    assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    assert deployment["MinimumHealthyPercent"] == 100
    assert service["LaunchType"] == "FARGATE"
    assert service["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    [balancer] = service["LoadBalancers"]
    assert (balancer["ContainerName"], balancer["ContainerPort"]) == ("app", 8080)
    assert "DesiredCount" not in service, "the scalable target owns the count"


def test_scaling_keeps_2_to_10_tasks_at_600_requests_a_minute_each(
    stacks: dict[str, Any],
) -> None:
    app = stacks[TEMPLATE]
    target = the(app, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 10)
    assert target["ResourceId"] == {"Fn::Sub": "service/${Cluster}/${Service.Name}"}
    policy = properties(app, "RequestCountScaling")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 600  # 10 requests per second per task
    metric = tracking["PredefinedMetricSpecification"]
    assert metric["PredefinedMetricType"] == "ALBRequestCountPerTarget"
    assert metric["ResourceLabel"] == {
        "Fn::Sub": "${LoadBalancer.LoadBalancerFullName}/${TargetGroup.TargetGroupFullName}"
    }


def test_cpu_over_80_for_a_minute_mails_the_alarm_topic(stacks: dict[str, Any]) -> None:
    app = stacks[TEMPLATE]
    alarm = properties(app, "CpuAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/ECS", "CPUUtilization")
    assert alarm["Threshold"] == 80
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (alarm["Period"], alarm["EvaluationPeriods"]) == (60, 1)
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    topic = the(app, "AWS::SNS::Topic")
    assert topic["KmsMasterKeyId"] == {"Ref": "AppKey"}
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": {"Ref": "AlertEmail"}}]


def test_a_journal_disk_80_percent_full_mails_the_alarm_topic(stacks: dict[str, Any]) -> None:
    """The task's ephemeral storage holds the journal: an alarm before it is full."""
    alarm = properties(stacks[TEMPLATE], "JournalDiskAlarm")
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    assert [m["Id"] for m in alarm["Metrics"] if m.get("ReturnData", True)] == ["percent"]
    assert metrics["percent"]["Expression"] == "100 * used / reserved"
    for name, metric in (("used", "Utilized"), ("reserved", "Reserved")):
        stat = metrics[name]["MetricStat"]
        assert stat["Metric"]["Namespace"] == "ECS/ContainerInsights"
        assert stat["Metric"]["MetricName"] == f"EphemeralStorage{metric}"
        dimensions = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
        assert dimensions == {
            "ClusterName": {"Ref": "Cluster"},
            "ServiceName": {"Fn::GetAtt": ["Service", "Name"]},
        }
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (80, "GreaterThanThreshold")
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    cluster = the(stacks[TEMPLATE], "AWS::ECS::Cluster")
    assert {"Name": "containerInsights", "Value": "enabled"} in cluster["ClusterSettings"]


# ------------------------------------------------------------------------ the task


def containers(stacks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    task = the(stacks[TEMPLATE], "AWS::ECS::TaskDefinition")
    return {c["Name"]: c for c in task["ContainerDefinitions"]}


def test_one_container_runs_phoenix_up_on_the_journal_volume(stacks: dict[str, Any]) -> None:
    task = the(stacks[TEMPLATE], "AWS::ECS::TaskDefinition")
    [volume] = task["Volumes"]
    by_name = containers(stacks)
    # `phoenix up` collects its own journal: no collector container beside it.
    assert set(by_name) == {"app"}
    for container in by_name.values():
        assert container["MountPoints"] == [
            {"SourceVolume": volume["Name"], "ContainerPath": HOME, "ReadOnly": False}
        ]
        env = {e["Name"]: e["Value"] for e in container["Environment"]}
        assert env["PHOENIX_HOME"] == HOME
        assert container["Essential"] is True
        assert container["User"] == "10001"
        assert container["ReadonlyRootFilesystem"] is True
        [secret] = container["Secrets"]
        assert secret["Name"] == "DB_CONNECTION_STRING"
        assert secret["ValueFrom"] == {"Ref": "ConnectionSecret"}
    assert by_name["app"]["Command"] == ["up"]


def test_the_task_retries_what_the_alb_does_not(stacks: dict[str, Any]) -> None:
    app = containers(stacks)["app"]
    env = {e["Name"]: e["Value"] for e in app["Environment"]}
    assert env["PORT"] == "8080"
    assert env["PHOENIX_HOST"] == "0.0.0.0"
    assert app["PortMappings"][0]["ContainerPort"] == 8080
    # The edge in the task resends a GET whose worker died to a sibling: two at least.
    assert int(env["PHOENIX_MIN_WORKERS"]) >= 2
    assert env["PHOENIX_BACKUP_AT"] == "off"  # AWS Backup and DocumentDB's own
    # Never the hostname: on Fargate it is made of the task's address, which a later task
    # may get (and with it this task's journal positions).
    assert env["PHOENIX_INSTANCE"] == "volume"
    assert "DependsOn" not in app


def test_a_crash_is_restarted_but_a_cannot_start_exit_is_not(stacks: dict[str, Any]) -> None:
    cannot_start = {
        exitcodes.UNAVAILABLE,
        exitcodes.SOFTWARE,
        exitcodes.CANTCREAT,
        exitcodes.TEMPFAIL,
        exitcodes.CONFIG,
    }
    for container in containers(stacks).values():
        policy = container["RestartPolicy"]
        assert policy["Enabled"] is True
        assert cannot_start <= set(policy["IgnoredExitCodes"])
        assert CRASH_EXIT_CODE not in policy["IgnoredExitCodes"]


def test_every_log_group_keeps_7_days_encrypted(stacks: dict[str, Any]) -> None:
    groups = {
        (name, group): properties["Properties"]
        for name in TEMPLATES
        for group, properties in resources(stacks[name], "AWS::Logs::LogGroup").items()
    }
    assert len(groups) >= 5  # flow logs, app, DocumentDB x2, CodeBuild
    for key, group in groups.items():
        assert group["RetentionInDays"] == 7, key
        assert "KmsKeyId" in group, key
    # The containers log into those groups, not into ones that ECS would create unbounded.
    app_groups = resources(stacks[TEMPLATE], "AWS::Logs::LogGroup")
    for container in containers(stacks).values():
        assert container["LogConfiguration"]["Options"]["awslogs-group"]["Ref"] in app_groups


# ------------------------------------------------------------------------ data


def test_documentdb_is_encrypted_tls_only_and_backed_up_7_days(stacks: dict[str, Any]) -> None:
    database = stacks[TEMPLATE]
    [cluster] = resources(database, "AWS::DocDB::DBCluster").values()
    assert cluster["Condition"] == "UseDocumentDb"
    properties = cluster["Properties"]
    assert properties["StorageEncrypted"] is True
    assert properties["BackupRetentionPeriod"] == 7
    assert the(database, "AWS::DocDB::DBClusterParameterGroup")["Parameters"]["tls"] == "enabled"
    subnets = the(database, "AWS::DocDB::DBSubnetGroup")["SubnetIds"]
    assert subnets == [{"Ref": "PrivateSubnetA"}, {"Ref": "PrivateSubnetB"}]
    assert len(resources(database, "AWS::DocDB::DBInstance")) == 2


def test_the_connection_string_secret_is_documentdb_or_the_external_uri(
    stacks: dict[str, Any],
) -> None:
    database = stacks[TEMPLATE]
    assert database["Parameters"]["ExternalMongoUri"]["NoEcho"] is True
    assert database["Conditions"]["UseDocumentDb"] == {
        "Fn::Equals": [{"Ref": "ExternalMongoUri"}, ""]
    }
    secret = resources(database, "AWS::SecretsManager::Secret")["ConnectionSecret"]["Properties"]
    condition, documentdb, external = secret["SecretString"]["Fn::If"]
    assert condition == "UseDocumentDb"
    assert external == {"Ref": "ExternalMongoUri"}
    uri = documentdb["Fn::Sub"]
    assert uri.startswith("mongodb://")
    query = dict(part.split("=", 1) for part in uri.split("?", 1)[1].split("&"))
    assert query["tls"] == "true"
    assert query["retryWrites"] == "false"
    assert query["tlsCAFile"] == "${CaFile}"
    assert "KmsKeyId" in secret


def test_aws_backup_keeps_daily_recovery_points_7_days(stacks: dict[str, Any]) -> None:
    database = stacks[TEMPLATE]
    [rule] = the(database, "AWS::Backup::BackupPlan")["BackupPlan"]["BackupPlanRule"]
    assert rule["Lifecycle"] == {"DeleteAfterDays": 7}
    assert rule["ScheduleExpression"].startswith("cron(")
    selection = the(database, "AWS::Backup::BackupSelection")["BackupSelection"]
    [cluster_arn] = selection["Resources"]
    assert cluster_arn["Fn::Sub"].endswith(":cluster:${DocumentDbCluster}")
    assert "EncryptionKeyArn" in the(database, "AWS::Backup::BackupVault")


def test_the_registry_scans_on_push_and_never_retags(stacks: dict[str, Any]) -> None:
    registry = stacks[TEMPLATE]
    repository = the(registry, "AWS::ECR::Repository")
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["EncryptionConfiguration"]["EncryptionType"] == "KMS"
    keep = registry["Parameters"]["KeepImages"]["Default"]
    text = repository["LifecyclePolicy"]["LifecyclePolicyText"]["Fn::Sub"]
    rules = json.loads(text.replace("${KeepImages}", str(keep)))["rules"]
    assert rules[-1]["selection"]["tagStatus"] == "any", "the 'any' rule must come last"


# ------------------------------------------------------------------------ IAM


def test_a_wildcard_resource_only_for_actions_that_have_no_resource(
    stacks: dict[str, Any],
) -> None:
    unrestrictable = {
        "ecr:GetAuthorizationToken",
        "ecs:DescribeTaskDefinition",
        "ecs:RegisterTaskDefinition",
        "ecs:DescribeTasks",  # conditioned on the cluster
        "ecs:ListTasks",
        "ecr-public:GetAuthorizationToken",  # the base image's registry, logged in
        "sts:GetServiceBearerToken",
    }
    for name in TEMPLATES:
        for role_name, role in resources(stacks[name], "AWS::IAM::Role").items():
            for policy in role["Properties"].get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    actions = statement["Action"]
                    actions = [actions] if isinstance(actions, str) else actions
                    assert not any(a == "*" or a.endswith(":*") for a in actions), role_name
                    if statement["Resource"] == "*":
                        assert set(actions) <= unrestrictable, (role_name, actions)


# ------------------------------------------------------------------------ delivery


def test_the_pipeline_builds_with_the_buildspec_and_deploys_to_ecs(
    stacks: dict[str, Any],
) -> None:
    pipeline = stacks[TEMPLATE]
    stages = the(pipeline, "AWS::CodePipeline::Pipeline")["Stages"]
    providers = [
        (stage["Name"], action["ActionTypeId"]["Provider"])
        for stage in stages
        for action in stage["Actions"]
    ]
    assert providers == [
        ("Source", "CodeStarSourceConnection"),
        ("Build", "CodeBuild"),
        ("Deploy", "ECS"),
    ]
    build_env = json.loads(stages[1]["Actions"][0]["Configuration"]["EnvironmentVariables"])
    assert {
        "name": "COMMIT_ID",
        "value": "#{SourceVariables.CommitId}",
        "type": "PLAINTEXT",
    } in build_env
    assert stages[2]["Actions"][0]["Configuration"]["FileName"] == "imagedefinitions.json"
    project = the(pipeline, "AWS::CodeBuild::Project")
    assert (ROOT / project["Source"]["BuildSpec"]) == BUILDSPEC
    bucket = properties(pipeline, "ArtifactBucket")
    [encryption] = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_the_buildspec_logs_in_builds_pushes_and_names_both_containers(
    stacks: dict[str, Any], tmp_path: Path
) -> None:
    spec = stacks["buildspec.yml"]
    phases = {
        name: spec["phases"][name]["commands"] for name in ("pre_build", "build", "post_build")
    }
    for name, commands in phases.items():
        # A stray ": " in a plain YAML scalar turns a command into a mapping.
        assert all(isinstance(c, str) for c in commands), name
    joined = {name: "\n".join(commands) for name, commands in phases.items()}
    assert "aws ecr get-login-password" in joined["pre_build"]
    assert "docker login" in joined["pre_build"]
    assert "docker build" in joined["build"]
    assert "docker push" in joined["post_build"]
    names = re.findall(r'"name":"([a-z-]+)"', joined["post_build"])
    assert sorted(names) == sorted(containers(stacks)), "the deploy must update every container"
    assert spec["artifacts"]["files"] == ["imagedefinitions.json"]

    script = tmp_path / "buildspec.sh"
    script.write_text("#!/bin/bash\n" + "\n".join(joined.values()) + "\n")
    result = run([tool("shellcheck"), script])
    assert result.returncode == 0, result.stdout


def test_the_build_pulls_the_dockerfiles_base_from_the_public_ecr_mirror(
    stacks: dict[str, Any],
) -> None:
    """Docker Hub limits anonymous pulls per address, and CodeBuild's are shared: the base
    comes from the public ECR gallery's copy, derived from the Dockerfile's own default."""
    spec = stacks["buildspec.yml"]
    mirror = spec["env"]["variables"]["BASE_MIRROR"]
    assert mirror == "public.ecr.aws/docker/library"
    [derive] = [c for c in spec["phases"]["pre_build"]["commands"] if c.startswith("BASE_IMAGE=")]
    result = subprocess.run(
        ["bash", "-c", f'{derive}\nprintf %s "$BASE_IMAGE"'],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**OFFLINE, "BASE_MIRROR": mirror, "DOCKERFILE": "Dockerfile"},
    )
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert default
    assert result.stdout == f"{mirror}/{default[1]}"
    build = "\n".join(spec["phases"]["build"]["commands"])
    assert '--build-arg "BASE_IMAGE=$BASE_IMAGE"' in build
    assert "docker login" in "\n".join(spec["phases"]["pre_build"]["commands"])


# ------------------------------------------------------------------------ issue 14


def test_the_service_waits_for_the_https_listener_too(template: dict[str, Any]) -> None:
    """With a certificate the HTTP listener only redirects: the HTTPS listener is what puts
    the target group on the ALB, and ECS refuses a target group that is on none."""
    waited = waits_for(template, "Service")
    assert {"HttpListener", "HttpsListener", "TargetGroup"} <= waited
    # The HTTPS listener may not exist: a DependsOn naming it would fail without one.
    depends = template["Resources"]["Service"]["DependsOn"]
    assert "HttpsListener" not in ([depends] if isinstance(depends, str) else depends)


def test_one_deploy_path_chosen_by_a_parameter(template: dict[str, Any]) -> None:
    """DeployWith=pipeline (the default) makes the pipeline; github-actions makes none of it,
    and the Deploy workflow refuses a stack whose DeployWith output is not github-actions."""
    parameter = template["Parameters"]["DeployWith"]
    assert parameter["AllowedValues"] == ["pipeline", "github-actions"]
    assert parameter["Default"] == "pipeline"
    assert template["Conditions"]["DeploysWithPipeline"] == {
        "Fn::Equals": [{"Ref": "DeployWith"}, "pipeline"]
    }
    delivery = {
        "AWS::CodePipeline::Pipeline",
        "AWS::CodeBuild::Project",
        "AWS::CloudFormation::WaitCondition",
    }
    resources_ = template["Resources"]
    pipeline_side = {n for n, r in resources_.items() if r["Type"] in delivery}
    for name in list(pipeline_side):
        pipeline_side |= {
            other
            for other in waits_for(template, name)
            if resources_[other].get("Condition") in ("DeploysWithPipeline", "WaitsForFirstImage")
        }
    for name in pipeline_side:
        assert resources_[name].get("Condition") in ("DeploysWithPipeline", "WaitsForFirstImage")
    assert template["Outputs"]["DeployWith"]["Value"] == {"Ref": "DeployWith"}

    workflow = yaml.safe_load(DEPLOY_WORKFLOW.read_text())
    for name, job in workflow["jobs"].items():
        steps = [s.get("name", "") for s in job["steps"]]
        guard = steps.index("ECS - the stack deploys with GitHub Actions, and what it names")
        assert guard < steps.index("ECS - copy the image to ECR under the same tag"), name
        run_ = job["steps"][guard]["run"]
        assert "output DeployWith" in run_ and "!= github-actions ]" in run_, name
        assert "exit 1" in run_, name


def test_a_collector_outage_alarms_to_the_topic(template: dict[str, Any]) -> None:
    """The ALB checks /health, which a store outage does not fail: the collector's line
    about it, on the container's log, is counted and alarms."""
    metric_filter = properties(template, "CollectorOutageFilter")
    assert metric_filter["LogGroupName"] == {"Ref": "AppLogGroup"}
    [metric] = metric_filter["MetricTransformations"]
    alarm = properties(template, "CollectorOutageAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        metric["MetricNamespace"],
        metric["MetricName"],
    )
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Threshold"]) == (60, 1, 1)
    env = {e["Name"]: e["Value"] for e in containers({TEMPLATE: template})["app"]["Environment"]}
    assert env["PHOENIX_LOG_TO"] == "stdout"


def test_the_collector_outage_line_reaches_the_containers_log(
    template: dict[str, Any], tmp_path: Path
) -> None:
    """`phoenix up` as the task runs it, its store unreachable: the supervisor's output (what
    awslogs sends) carries the phrase the metric filter counts."""
    pattern = properties(template, "CollectorOutageFilter")["FilterPattern"]
    phrase = json.loads(pattern)  # a quoted term: the line contains exactly this
    env = {e["Name"]: e["Value"] for e in containers({TEMPLATE: template})["app"]["Environment"]}
    closed = f"postgresql://phoenix:secret@127.0.0.1:{free_port()}/phoenix?connect_timeout=1"
    with running_stack(
        tmp_path / "home",
        DB_CONNECTION_STRING=closed,
        PHOENIX_LOG_TO=env["PHOENIX_LOG_TO"],
        PHOENIX_LOG_FORMAT=env["PHOENIX_LOG_FORMAT"],
        PHOENIX_READY_MAX_LAG="3600",
    ) as stack:
        eventually(
            lambda: phrase in stack.output.read_text(errors="replace"),
            60,
            what=f"{phrase!r} on the stack's output",
            interval=0.2,
        )


def test_a_request_surge_adds_tasks_after_one_minute_not_three(
    template: dict[str, Any],
) -> None:
    """Target tracking waits for 3 one-minute points; the step policy acts on the first
    minute at 1.5 times the target."""
    tracking = properties(template, "RequestCountScaling")
    target = tracking["TargetTrackingScalingPolicyConfiguration"]["TargetValue"]
    step = properties(template, "RequestSurgeScaling")
    assert step["PolicyType"] == "StepScaling"
    assert step["ScalingTargetId"] == {"Ref": "ScalableTarget"}
    config = step["StepScalingPolicyConfiguration"]
    assert config["AdjustmentType"] == "PercentChangeInCapacity"
    assert all(a["ScalingAdjustment"] > 0 for a in config["StepAdjustments"])
    alarm = properties(template, "RequestSurgeAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        "AWS/ApplicationELB",
        "RequestCountPerTarget",
    )
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Statistic"]) == (60, 1, "Sum")
    assert target < alarm["Threshold"] <= 2 * target
    assert alarm["AlarmActions"] == [{"Ref": "RequestSurgeScaling"}]


def test_the_readme_deploys_the_one_template_with_every_required_parameter(
    template: dict[str, Any],
) -> None:
    """One `aws cloudformation deploy`, naming each parameter that has no default."""
    text = README.read_text()
    commands = re.findall(r"^aws cloudformation deploy (?:.*\\\n)*.*", text, re.MULTILINE)
    assert commands, "the README shows no deploy command"
    first = commands[0]
    assert f"deploy/aws/{TEMPLATE}" in first
    required = {n for n, p in template["Parameters"].items() if "Default" not in p}
    # With the pipeline (the default), its rule needs the connection and the repository.
    required |= {"ConnectionArn", "FullRepositoryId"}
    assert {n for n in required if f"{n}=" not in first} == set()
    for gone in ("network.yaml", "registry.yaml", "database.yaml", "app.yaml", "pipeline.yaml"):
        assert gone not in text
    assert "docker push" not in text, "the pipeline builds the first image"
