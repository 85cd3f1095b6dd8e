"""The container files, checked without a Docker engine: Dockerfile, .dockerignore, compose.yaml
and the helpers in deploy/docker/.

The validators come from .venv-tools (scripts/bootstrap --dev): hadolint and checkov on the
Dockerfile, shellcheck on the scripts. compose.yaml is read with PyYAML for what the stack
needs, and checked against the Compose specification by `docker compose config` where a
Compose v2+ binary is at hand (it needs no engine). The HEALTHCHECK command, the backup
loop and the builder's lock check are run for real: against `phoenix serve`, with stand-ins
for `phoenix` and `sleep`, and on lock files made from this environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.certs import self_signed_pem
from tests.fixtures.ports import free_port
from tests.fixtures.server import PhoenixProcess

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".venv-tools" / "bin"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "compose.yaml"
HELPERS = REPO / "deploy" / "docker"
BACKUP_LOOP = HELPERS / "backup-loop.sh"
MONGO_INIT = HELPERS / "mongo-init.js"
VERIFY_LOCKED = HELPERS / "verify_locked.py"
FETCH_CA_BUNDLE = HELPERS / "fetch_ca_bundle.py"

PHOENIX_SERVICES = ("app", "backup")
# `${NAME:?message}`: compose refuses to start while NAME is unset or empty.
REQUIRED_VARIABLE = re.compile(r"\$\{[A-Z][A-Z0-9_]*:\?[^}]+\}")


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/bootstrap --dev (it installs the validators)")
    return path


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, cwd=REPO, **kwargs
    )


# -- Dockerfile ------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuations joined, comments dropped."""
    found: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        current = ""
    return found


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def runtime_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def values(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for key, arguments in stage if key == keyword]


def environment(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in values(stage, "ENV"):
        for pair in arguments.split():
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def healthcheck_command() -> list[str]:
    [healthcheck] = values(runtime_stage(), "HEALTHCHECK")
    _, _, exec_form = healthcheck.partition("CMD ")
    command = json.loads(exec_form)
    assert isinstance(command, list)
    return [str(part) for part in command]


def test_hadolint_finds_nothing() -> None:
    result = run([str(tool("hadolint")), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_checkov_fails_no_check_and_every_skip_gives_a_reason() -> None:
    # --skip-download: offline, no call to the vendor's API for guideline links.
    command = [str(tool("checkov")), "-f", str(DOCKERFILE), "--framework", "dockerfile"]
    result = run([*command, "--quiet", "--skip-download", "--output", "json"])
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [check["check_id"] for check in report["results"].get("failed_checks", [])]
    assert summary["failed"] == 0, failed
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0  # the checks did run
    for check in report["results"].get("skipped_checks", []):
        assert check["check_result"].get("suppress_comment", "").strip(), check["check_id"]


def global_arguments() -> dict[str, str]:
    """The build arguments declared before the first FROM, with their defaults."""
    found = {}
    for keyword, arguments in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            found[name] = default
    return found


def stage(name: str) -> list[tuple[str, str]]:
    [found] = [s for s in stages() if s[0][1].lower().endswith(f" as {name}")]
    return found


def test_the_image_is_built_in_stages_from_a_pinned_slim_base() -> None:
    # What checkov's CKV_DOCKER_7 would check, had it read the arguments' defaults.
    defaults = global_arguments()
    name, _, tag = defaults["BASE_IMAGE"].partition(":")
    assert name == "python" and "slim" in tag and tag != "latest", defaults["BASE_IMAGE"]
    assert defaults["WHEELS"] == "scratch"  # no wheelhouse: pip uses the package index
    bases = {s[0][1].split()[0] for s in stages()}
    assert bases == {"${BASE_IMAGE}", "${WHEELS}"}
    assert stage("wheels")[0][1].split()[0] == "${WHEELS}"
    builder = stage("builder")
    builder_runs = " ".join(values(builder, "RUN"))
    assert "-c requirements.lock" in builder_runs
    assert "verify_locked.py requirements.lock" in builder_runs
    assert builder_runs.count("from=wheels") == builder_runs.count("pip install")
    runtime = runtime_stage()
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in values(runtime, "COPY"))
    assert not any("pip install" in command for command in values(runtime, "RUN"))


def test_the_runtime_carries_haproxy_tini_and_the_rds_ca_bundle() -> None:
    runtime = runtime_stage()
    installs = " ".join(values(runtime, "RUN"))
    assert "apt-get install" in installs and " haproxy" in installs and " tini" in installs
    assert "rm -rf /var/lib/apt/lists/*" in installs
    fetch = " ".join(values(stage("rds-ca"), "RUN"))
    assert "fetch_ca_bundle.py" in fetch and "$RDS_CA_BUNDLE_URL" in fetch
    [default] = [a for a in values(stage("rds-ca"), "ARG") if a.startswith("RDS_CA_BUNDLE_URL=")]
    assert default.endswith("=https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem")
    # Where the DocumentDB connection string of deploy/aws looks for it.
    assert any(
        c.startswith("--from=rds-ca") and c.endswith(" /etc/ssl/certs/rds-global-bundle.pem")
        for c in values(runtime, "COPY")
    )


def test_the_runtime_runs_phoenix_up_as_a_non_root_user() -> None:
    runtime = runtime_stage()
    user = values(runtime, "USER")[-1]
    assert user.split(":")[0] not in {"root", "0"}, user
    # tini reaps what a crashed worker leaves; `phoenix up` survives /crash.
    assert json.loads(values(runtime, "ENTRYPOINT")[-1]) == ["tini", "-s", "--", "phoenix"]
    assert json.loads(values(runtime, "CMD")[-1]) == ["up"]
    env = environment(runtime)
    assert env["PHOENIX_HOST"] == "0.0.0.0"
    assert int(env["PORT"]) >= 1024  # HAProxy runs as the image's user: no privileged port
    assert int(env["PHOENIX_MIN_WORKERS"]) >= 2  # a sibling for the edge to retry on
    assert env["PHOENIX_BACKUP_AT"] == "off"  # a service of its own in a cluster
    # Every part's log on the container's output (docker logs, kubectl logs, awslogs), not
    # in files that go with the volume; text stays the format at a terminal.
    assert env["PHOENIX_LOG_TO"] == "stdout"
    assert "PHOENIX_LOG_FORMAT" not in env
    assert env["PHOENIX_HOME"].startswith("/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # a read-only root file system
    assert values(runtime, "EXPOSE") == [env["PORT"]]
    assert values(runtime, "VOLUME") == [json.dumps([env["PHOENIX_HOME"]])]


def test_the_image_labels_carry_the_project_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = runtime_stage()
    assert f"VERSION={project['version']}" in values(runtime, "ARG")
    labels = " ".join(values(runtime, "LABEL"))
    for key in ("title", "version", "revision", "licenses", "description"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_the_healthcheck_passes_on_a_serving_app_and_fails_without_one(
    phoenix_server: PhoenixProcess,
) -> None:
    command = healthcheck_command()
    assert command[0] == "python" and "/health" in command[-1]
    # The proxy must be ignored: the check is for the container's own port.
    env = {"PATH": os.environ["PATH"], "http_proxy": "http://127.0.0.1:9"}
    here = run([sys.executable, *command[1:]], env={**env, "PORT": str(phoenix_server.port)})
    assert here.returncode == 0, here.stderr
    gone = run([sys.executable, *command[1:]], env={**env, "PORT": str(free_port())})
    assert gone.returncode != 0
    # It probes PHOENIX_HOST, where the server listens (a replica: an address of its own);
    # the any-address means the loopback. The server here is on 127.0.0.1 only.
    port = {"PORT": str(phoenix_server.port)}
    for host, answers in (("127.0.0.1", True), ("0.0.0.0", True), ("127.0.0.2", False)):
        probe = run([sys.executable, *command[1:]], env={**env, **port, "PHOENIX_HOST": host})
        assert (probe.returncode == 0) is answers, (host, probe.stderr)


# -- .dockerignore ---------------------------------------------------------------------------


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception, regex) in order, with Docker's meaning of *, ** and ?."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.removeprefix("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        patterns.append((negate, re.compile(regex)))
    return patterns


def in_build_context(path: str) -> bool:
    """Whether `path` is sent to the builder: the last pattern matching it or a parent wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negate, pattern in ignore_patterns():
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            included = negate
    return included


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    copied = []
    for stage in stages():
        for arguments in values(stage, "COPY"):
            if "--from=" in arguments:
                continue
            words = [word for word in arguments.split() if not word.startswith("--")]
            copied += words[:-1]
    assert copied
    for source in copied:
        assert (REPO / source).exists(), source
        assert in_build_context(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert in_build_context("src/cloud_phoenix/app/templates/index.html")
    for kept_out in (
        ".git/config",
        ".env",
        ".venv/bin/python",
        ".venv-tools/bin/checkov",
        "var/db/phoenix.sqlite3",
        "tests/conftest.py",
        "test-artifacts/browser/page.png",
        "src/cloud_phoenix/__pycache__/cli.cpython-311.pyc",
        "src/cloud_phoenix/stray.pyc",
        "src/cloud_phoenix.egg-info/PKG-INFO",
    ):
        assert not in_build_context(kept_out), kept_out


# -- compose.yaml ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, from the short volume syntax."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found[target] = source
    return found


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted path, value) of every scalar in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, f"{path}[{index}]")
    elif node is not None:
        yield path, str(node)


def test_every_service_is_restarted(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {*PHOENIX_SERVICES, "mongo"}
    for name, service in services.items():
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name


def test_app_and_backup_share_the_journal(compose: dict[str, Any]) -> None:
    home = environment(runtime_stage())["PHOENIX_HOME"]
    services = compose["services"]
    sources = set()
    for name in PHOENIX_SERVICES:
        service = services[name]
        assert "PHOENIX_HOME" not in service.get("environment", {}), name
        assert home in mounts(service), f"{name} has no volume on {home} (the journal)"
        sources.add(mounts(service)[home])
    [volume] = sources
    assert volume in compose["volumes"]  # a named volume: it outlives the containers
    # `phoenix up` collects its own journal: no second collector on it.
    assert services["app"]["command"] == ["up"]
    assert "collector" not in services
    assert "PHOENIX_SERVE_COLLECTOR" not in services["app"]["environment"]
    assert services["backup"]["entrypoint"] == ["phoenix-backup-loop"]
    # The image's PHOENIX_BACKUP_AT is off: the backup service sets a time of its own.
    assert services["backup"]["environment"]["PHOENIX_BACKUP_AT"] != "off"
    assert "/usr/local/bin/phoenix-backup-loop" in " ".join(values(runtime_stage(), "COPY"))


def test_the_phoenix_containers_run_read_only_with_a_tmpfs(compose: dict[str, Any]) -> None:
    image = compose["services"]["app"]["image"]
    for name in PHOENIX_SERVICES:
        service = compose["services"][name]
        assert service["image"] == image and service["build"] == ".", name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name


def test_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["app"]["healthcheck"]["test"] == ["CMD", *healthcheck_command()]
    assert "8080:8080" in services["app"]["ports"]
    # It serves no HTTP: the image's check on /health would call it unhealthy forever.
    assert services["backup"]["healthcheck"] == {"disable": True}
    mongo_check = " ".join(services["mongo"]["healthcheck"]["test"])
    assert "mongosh" in mongo_check and "ping" in mongo_check
    assert services["backup"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_mongo_requires_authentication_and_keeps_its_data(compose: dict[str, Any]) -> None:
    mongo = compose["services"]["mongo"]
    env = mongo["environment"]
    assert env["MONGO_INITDB_ROOT_USERNAME"]
    assert REQUIRED_VARIABLE.fullmatch(env["MONGO_INITDB_ROOT_PASSWORD"])
    assert REQUIRED_VARIABLE.fullmatch(env["MONGO_PASSWORD"])
    assert mounts(mongo)["/data/db"] in compose["volumes"]
    init = Path(mounts(mongo)["/docker-entrypoint-initdb.d/10-phoenix-user.js"])
    assert (REPO / init).resolve() == MONGO_INIT
    # The application's user is the one the init script creates, on the database it may use.
    script = MONGO_INIT.read_text()
    for name in PHOENIX_SERVICES:
        url = compose["services"][name]["environment"]["DB_CONNECTION_STRING"]
        match = re.fullmatch(r"mongodb://(\w+):(.+)@mongo:27017/(\w+)\?authSource=admin", url)
        assert match, url
        user, password, database = match.groups()
        assert f'user: "{user}"' in script
        assert f'db: "{database}"' in script
        assert password == env["MONGO_PASSWORD"]
    assert "process.env.MONGO_PASSWORD" in script


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    secretive = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
    for path, value in strings(compose):
        if secretive.search(path.rsplit(".", 1)[-1]):
            assert REQUIRED_VARIABLE.fullmatch(value), f"{path} is not ${{VAR:?...}}"
    text = COMPOSE.read_text()
    for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", text):
        assert REQUIRED_VARIABLE.fullmatch(password), password


def compose_binary() -> list[str] | None:
    """A Docker Compose (v2 or later) command, if this machine has one: `config` needs no
    engine."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        result = run([*command, "version"])
        major = re.search(r"version v?(\d+)\.", result.stdout)
        if result.returncode == 0 and major and int(major.group(1)) >= 2:  # not Python's v1
            return command
    return None


def test_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = compose_binary()
    if command is None:
        pytest.skip(
            "no Docker Compose v2+ here (the docker client has no compose plugin, no "
            "docker-compose on PATH): the Compose-specification check is not run; the "
            "structure is still checked by the other tests"
        )
    empty = tmp_path / "empty.env"
    empty.write_text("")  # not the developer's .env
    base = [*command, "--env-file", str(empty), "-f", str(COMPOSE), "config", "--quiet"]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGO_", "PHOENIX_", "COMPOSE_"))
    }
    secrets = {"MONGO_PASSWORD": "a" * 48, "MONGO_ROOT_PASSWORD": "b" * 48}
    good = run(base, env={**env, **secrets})
    assert good.returncode == 0 and good.stderr.strip() == "", good.stderr
    # Some wrappers lose the exit code: the message is what is checked.
    missing = run(base, env={**env, "MONGO_ROOT_PASSWORD": "b" * 48})
    assert "required variable MONGO_PASSWORD is missing" in missing.stderr, missing.stderr


# -- deploy/docker helpers -------------------------------------------------------------------


def test_shellcheck_finds_nothing() -> None:
    scripts = sorted(HELPERS.glob("*.sh"))
    assert BACKUP_LOOP in scripts
    result = run([str(tool("shellcheck")), "--norc", *map(str, scripts)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="node absent: no JavaScript parser")
def test_the_mongo_init_script_parses() -> None:
    result = run(["node", "--check", str(MONGO_INIT)])
    assert result.returncode == 0, result.stderr


def test_the_lock_check_names_what_is_not_as_locked(tmp_path: Path) -> None:
    installed = {dist.metadata["Name"]: dist.version for dist in metadata.distributions()}
    lock = tmp_path / "requirements.lock"
    check = [sys.executable, str(VERIFY_LOCKED), str(lock), "--ignore", "cloud-phoenix"]
    lock.write_text(
        "".join(f"{name}=={version}\n    # via x\n" for name, version in installed.items())
    )
    assert run(check).returncode == 0
    moved, dropped = sorted(name for name in installed if name.lower() != "cloud-phoenix")[:2]
    lock.write_text(
        "".join(
            f"{name}=={'0.0.0' if name == moved else version}\n"
            for name, version in installed.items()
            if name != dropped
        )
    )
    result = run(check)
    assert result.returncode == 1
    assert "(locked: 0.0.0)" in result.stderr and "(locked: not at all)" in result.stderr


def stand_ins(folder: Path) -> Path:
    """`phoenix` that records its arguments (and fails `backup`; `backups` exits
    $BACKUPS_EXIT), `sleep` that records its delay and returns at once, then on its second
    call stops the loop with SIGTERM."""
    folder.mkdir()
    (folder / "phoenix").write_text(
        textwrap.dedent("""\
            #!/bin/sh
            echo "$*" >> "$CALLS"
            [ "$1" = backup ] && exit 1
            [ "$1" = backups ] && exit "${BACKUPS_EXIT:-0}"
            exit 0
            """)
    )
    (folder / "sleep").write_text(
        textwrap.dedent("""\
            #!/bin/sh
            echo "$1" >> "$SLEEPS"
            if [ "$(wc -l < "$SLEEPS")" -ge 2 ]; then
              kill -TERM "$PPID"
              exec /bin/sleep 30
            fi
            """)
    )
    for script in folder.iterdir():
        script.chmod(0o755)
    return folder


@pytest.mark.parametrize(("minutes", "low", "high"), [(2, 60, 180), (-2, 86220, 86340)])
def test_the_backup_loop_waits_for_its_time_and_survives_a_failed_backup(
    tmp_path: Path, minutes: int, low: int, high: int
) -> None:
    assert os.access(BACKUP_LOOP, os.X_OK)
    at = (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%H:%M")
    calls, sleeps = tmp_path / "calls", tmp_path / "sleeps"
    env = {
        "PATH": f"{stand_ins(tmp_path / 'bin')}:{os.environ['PATH']}",
        "TZ": "UTC",
        "PHOENIX_BACKUP_AT": at,
        "CALLS": str(calls),
        "SLEEPS": str(sleeps),
    }
    result = run([str(BACKUP_LOOP), "--verify"], env=env)
    assert result.returncode == 0, result.stderr
    assert calls.read_text().splitlines() == ["backups", "backup --verify"]
    delays = [int(line) for line in sleeps.read_text().splitlines()]
    assert len(delays) == 2 and all(low <= delay <= high for delay in delays), (at, delays)
    assert "backup failed (exit 1)" in result.stderr
    assert "stopped" in result.stderr


@pytest.mark.parametrize(("listing", "code", "calls"), [(65, 0, 2), (78, 78, 1)])
def test_the_backup_loop_goes_on_past_a_refused_backup_but_not_a_bad_configuration(
    tmp_path: Path, listing: int, code: int, calls: int
) -> None:
    env = {
        "PATH": f"{stand_ins(tmp_path / 'bin')}:{os.environ['PATH']}",
        "BACKUPS_EXIT": str(listing),
        "CALLS": str(tmp_path / "calls"),
        "SLEEPS": str(tmp_path / "sleeps"),
    }
    result = run([str(BACKUP_LOOP)], env=env)
    assert result.returncode == code, result.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == calls


@pytest.mark.parametrize(
    ("at", "words"),
    [("25:00", "PHOENIX_BACKUP_AT=25:00 is not valid"), ("off", "set the time of the daily")],
)
def test_the_backup_loop_refuses_a_time_that_is_not_hh_mm(
    tmp_path: Path, at: str, words: str
) -> None:
    calls = tmp_path / "calls"
    env = {
        "PATH": f"{stand_ins(tmp_path / 'bin')}:{os.environ['PATH']}",
        "PHOENIX_BACKUP_AT": at,
        "CALLS": str(calls),
        "SLEEPS": str(tmp_path / "sleeps"),
    }
    result = run([str(BACKUP_LOOP)], env=env)
    assert result.returncode == 78
    assert words in result.stderr
    assert not calls.exists()


@contextmanager
def served(files: dict[str, bytes]) -> Iterator[str]:
    """`files` on a loopback HTTP server while the block runs; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_ca_bundle_fetch_keeps_only_ca_certificates(tmp_path: Path) -> None:
    bundle = self_signed_pem("test CA one") + self_signed_pem("test CA two")
    files = {
        "bundle.pem": bundle,
        "error.html": b"<html><body>503 Service Unavailable</body></html>",
        "leaf.pem": self_signed_pem("not a CA", ca=False),
    }
    dest = tmp_path / "rds-global-bundle.pem"
    with served(files) as url:
        good = run([sys.executable, str(FETCH_CA_BUNDLE), f"{url}/bundle.pem", str(dest)])
        assert good.returncode == 0, good.stderr
        assert dest.read_bytes() == bundle
        assert "2 CA certificates" in good.stdout
        assert hashlib.sha256(bundle).hexdigest() in good.stdout  # to compare by hand
        dest.unlink()
        for name, why in (
            ("error.html", "not PEM certificates"),
            ("leaf.pem", "no CA certificate"),
            ("missing.pem", "404"),
        ):
            bad = run([sys.executable, str(FETCH_CA_BUNDLE), f"{url}/{name}", str(dest)])
            assert bad.returncode == 1 and why in bad.stderr, (name, bad.stderr)
            assert not dest.exists(), name
    local = run([sys.executable, str(FETCH_CA_BUNDLE), f"file://{tmp_path}/x.pem", str(dest)])
    assert local.returncode == 1 and "not an http(s) URL" in local.stderr
