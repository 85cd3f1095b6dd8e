"""No piece of a database password in any answer, log, event, notice, manifest or status.

Each password holds one of the characters that end a URL's user information for one reader
and not for another (`?`, `/`, `@`, `#`, and `:`, `%`, `+`) at its start, middle and end.
Written as it is in DB_CONNECTION_STRING, it is refused at start with exit 78; percent-encoded,
it logs in as a real PostgreSQL role that has it, and nothing shows it, whether the database
is up, down, or given a wrong password. MongoDB URLs are covered without a server by
tests/store/test_urls.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from cloud_phoenix.backup import BackupError, run_backup
from cloud_phoenix.config import Settings
from cloud_phoenix.stack.workerapp import worker_app
from tests.fixtures.ports import free_port
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.server import PhoenixProcess, running_stack
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

RESERVED = "?/@#:%+"
ROLE = "phoenix_secrecy"
DATABASE = "phoenix_secrecy"


def password_with(chars: str) -> str:
    """`chars` at the start, in the middle and at the end. Every 3-character piece holds '!',
    '~' or '*', which no cursor, request id, time, pid or host name holds: a piece found in
    an output is the password leaking, never a coincidence."""
    return f"{chars}x!~Q*{chars}*Z~!k{chars}"


def wrong_for(password: str) -> str:
    return password[::-1]  # the same reserved characters, and none of its pieces


def pieces(password: str) -> set[str]:
    """Every 3-character piece of the password, as it is and as written in the URL."""
    found = {password[i : i + 3] for i in range(len(password) - 2)}
    return found | {quote(piece, safe="") for piece in found}


def assert_hidden(text: str, passwords: tuple[str, ...], where: str) -> None:
    found = sorted({piece for p in passwords for piece in pieces(p) if piece in text})
    assert not found, f"{where} holds pieces of the password: {found}"


@dataclass
class SecretRole:
    """A PostgreSQL role owning a database of its own; its password is set per test."""

    server: PostgresServer

    def admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self.server.url_for("postgres"), autocommit=True, connect_timeout=5)

    def set_password(self, password: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(password)
                )
            )

    def disconnect(self) -> None:
        """End the role's sessions: pooled connections must log in again."""
        with self.admin() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (ROLE,),
            )

    def url(self, password: str, port: int | None = None) -> str:
        """The database's URL with `password` percent-encoded, as the README asks."""
        written = quote(password, safe="")
        return f"postgresql://{ROLE}:{written}@127.0.0.1:{port or self.server.port}/{DATABASE}"


@pytest.fixture(scope="module")
def secret_role(postgres_server: PostgresServer) -> Iterator[SecretRole]:
    if not postgres_server.running:
        postgres_server.start()
    role = SecretRole(postgres_server)
    with role.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)
            )
        )
    try:
        yield role
    finally:
        if not postgres_server.running:
            postgres_server.start()
        with role.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def phoenix(
    home: Path, url: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHOENIX_HOME": str(home), "DB_CONNECTION_STRING": url}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def settings_for(home: Path, url: str) -> Settings:
    return Settings.from_env(
        {
            "PHOENIX_HOME": str(home),
            "DB_CONNECTION_STRING": url,
            "PHOENIX_ACCESS_LOG": "false",
            "PHOENIX_SERVE_COLLECTOR": "false",  # the stack test runs the collector process
        }
    )


def files_text(home: Path) -> str:
    """Every text file under `home`: logs, status, manifests, journal (dumps are binary)."""
    texts = []
    for path in sorted(home.rglob("*")):
        if path.is_file():
            try:
                texts.append(f"--- {path.relative_to(home)}\n{path.read_text()}")
            except UnicodeDecodeError:
                continue
    return "\n".join(texts)


# -- refused at start ------------------------------------------------------------------------


@pytest.mark.parametrize("char", RESERVED)
def test_an_unencoded_password_is_refused_at_start_with_exit_78(char: str, tmp_path: Path) -> None:
    password = password_with(char)
    url = f"postgresql://{ROLE}:{password}@127.0.0.1:{free_port()}/{DATABASE}"
    for command in (("collect", "--once"), ("backup",)):
        result = phoenix(tmp_path / "home", url, *command, timeout=60)
        assert result.returncode == 78, (command, result.stdout, result.stderr)
        assert "DB_CONNECTION_STRING" in result.stderr and "percent-encode" in result.stderr
        assert_hidden(result.stdout + result.stderr, (password,), f"phoenix {command[0]}")


def test_serve_refuses_an_unencoded_password_before_it_listens(tmp_path: Path) -> None:
    password = password_with("?")
    url = f"postgresql://{ROLE}:{password}@127.0.0.1:{free_port()}/{DATABASE}"
    result = phoenix(tmp_path / "home", url, "serve", timeout=60)
    assert result.returncode == 78
    assert_hidden(result.stdout + result.stderr, (password,), "phoenix serve")


# -- database up, down, wrong password: the application and the backup, in-process ---------


def answers(client: TestClient) -> dict[str, httpx.Response]:
    return {path: client.get(path) for path in ("/checkdb", "/ready", "/logs", "/ops/data")}


def backup_outputs(settings: Settings) -> tuple[str, BackupError | None]:
    """Everything a backup said: its result or error, its events and notices, its manifest."""
    said: list[str] = []
    error: BackupError | None = None
    try:
        result = run_backup(
            settings,
            notify=lambda title, body: said.append(f"{title}\n{body}"),
            record_event=lambda kind, message, data: said.append(
                f"{kind} {message} {json.dumps(data)}"
            ),
        )
        said.append(repr(result))
    except BackupError as exc:
        error = exc
        said.append(str(exc))
    return "\n".join(said), error


@pytest.mark.parametrize("char", RESERVED)
def test_with_the_database_up_an_encoded_password_connects_and_never_shows(
    char: str, secret_role: SecretRole, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_with(char)
    secret_role.set_password(password)
    home = tmp_path / "home"
    settings = settings_for(home, secret_role.url(password))
    with TestClient(worker_app(settings), raise_server_exceptions=False) as client:
        got = answers(client)
    check = got["/checkdb"].json()
    assert got["/checkdb"].status_code == 200 and check["reachable"] is True
    assert check["target"] == f"postgresql://127.0.0.1:{secret_role.server.port}"
    assert got["/ready"].status_code == 200 and got["/logs"].status_code == 200
    backup, error = backup_outputs(settings)
    assert error is None, backup
    outputs = {path: r.text for path, r in got.items()}
    outputs |= {"backup": backup, "server log": caplog.text, "home": files_text(home)}
    for where, text in outputs.items():
        assert_hidden(text, (password,), where)


# The four characters here (the stack test has all seven in one password): parsing
# happens before any connection, and is covered for each character by the refusal above.
@pytest.mark.parametrize("state", ["down", "wrong password"])
@pytest.mark.parametrize("char", "?/@#")
def test_with_the_database_down_or_a_wrong_password_nothing_shows_it(
    char: str,
    state: str,
    secret_role: SecretRole,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_with(char)
    secret_role.set_password(password)
    if state == "down":
        url = secret_role.url(password, port=free_port())  # nobody listens there
    else:
        url = secret_role.url(wrong_for(password))
    secrets = (password, wrong_for(password))
    home = tmp_path / "home"
    settings = settings_for(home, url)
    with TestClient(worker_app(settings), raise_server_exceptions=False) as client:
        got = answers(client)
    check, ready, logs = got["/checkdb"], got["/ready"], got["/logs"]
    assert check.status_code == ready.status_code == logs.status_code == 503
    # The public learns that the database is unavailable; the server log learns why.
    assert check.json()["error"].startswith("database unavailable")
    assert ready.json()["reasons"][0].startswith("database unavailable")
    assert logs.json()["error"] == "database unavailable"
    port = str(urlsplit(url).port)
    for response in (check, ready, logs):
        body = json.dumps({k: v for k, v in response.json().items() if k != "target"})
        assert "127.0.0.1" not in body and port not in body
        assert "authentication" not in body and "refused" not in body
    why = "password authentication failed" if state == "wrong password" else "refused"
    assert why in caplog.text
    backup, error = backup_outputs(settings)
    assert error is not None and error.code == 69
    command = phoenix(home, url, "backup")
    assert command.returncode == 69
    outputs = {path: r.text for path, r in got.items()}
    outputs |= {
        "backup": backup,
        "phoenix backup": command.stdout + command.stderr,
        "server log": caplog.text,
        "home": files_text(home),
    }
    for where, text in outputs.items():
        assert_hidden(text, secrets, where)


# -- the whole stack: gunicorn, the collector, the supervisor, status, backups ---------------


def checkdb(stack: PhoenixProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(stack.url + "/checkdb", timeout=30).json()
    return body


def checkdb_status(stack: PhoenixProcess) -> int:
    return httpx.get(stack.url + "/checkdb", timeout=30).status_code


def stack_outputs(stack: PhoenixProcess, url: str) -> dict[str, str]:
    """What the stack shows now: its public answers, `phoenix status` and `phoenix backup`."""
    shown = {}
    for path in ("/checkdb", "/ready", "/logs", "/ops/data"):
        shown[path] = httpx.get(stack.url + path, timeout=30).text
    status = phoenix(stack.home, url, "status", "--json")
    backup = phoenix(stack.home, url, "backup")
    shown["phoenix status"] = status.stdout + status.stderr
    shown["phoenix backup"] = f"exit {backup.returncode}\n{backup.stdout}{backup.stderr}"
    return shown


def test_the_stack_shows_no_piece_of_the_password_up_wrong_or_down(
    secret_role: SecretRole, tmp_path: Path
) -> None:
    password = password_with(RESERVED)
    wrong = wrong_for(password)
    secret_role.set_password(password)
    url = secret_role.url(password)
    home = tmp_path / "home"
    shown: dict[str, str] = {}
    server = secret_role.server
    try:
        with running_stack(home, DB_CONNECTION_STRING=url, PHOENIX_READY_MAX_LAG="3600") as stack:
            for _ in range(5):
                httpx.get(stack.url + "/health", timeout=10)
            # Each look is a request that reaches the database: a few a second are enough.
            eventually(
                lambda: (checkdb(stack).get("records") or 0) >= 5,
                30,
                what="5 records",
                interval=0.2,
            )
            up = stack_outputs(stack, url)
            assert up["phoenix backup"].startswith("exit 0"), up["phoenix backup"]
            shown |= {f"up {k}": v for k, v in up.items()}

            secret_role.set_password(wrong)  # the stack's URL now holds a wrong password
            secret_role.disconnect()
            eventually(lambda: checkdb_status(stack) == 503, 30, what="/checkdb: 503", interval=0.2)
            for _ in range(3):
                httpx.get(stack.url + "/health", timeout=10)
            shown |= {f"wrong {k}": v for k, v in stack_outputs(stack, url).items()}

            server.stop()
            eventually(lambda: checkdb_status(stack) == 503, 30, what="/checkdb: 503", interval=0.2)
            for _ in range(3):
                httpx.get(stack.url + "/health", timeout=10)
            shown |= {f"down {k}": v for k, v in stack_outputs(stack, url).items()}
            assert "exit 69" in shown["down phoenix backup"]
    finally:
        if not server.running:
            server.start()
        secret_role.set_password(password)
    shown["files under PHOENIX_HOME"] = files = files_text(home)
    # The operator's logs say why, the collector's among them; the public answers do not.
    assert "password authentication failed" in files and "collector: store unavailable" in files
    for state in ("wrong", "down"):
        assert json.loads(shown[f"{state} /checkdb"])["error"].startswith("database unavailable")
        public = shown[f"{state} /ready"] + shown[f"{state} /logs"]
        assert "authentication" not in public and "127.0.0.1" not in public
    for where, text in shown.items():
        assert_hidden(text, (password, wrong), where)


def test_a_backup_manifest_names_the_server_and_database_never_the_password(
    secret_role: SecretRole, tmp_path: Path
) -> None:
    password = password_with(RESERVED)
    secret_role.set_password(password)
    settings = settings_for(tmp_path / "home", secret_role.url(password))
    result = run_backup(settings)
    source = result.manifest.source
    assert source == f"postgresql://127.0.0.1:{secret_role.server.port}/{DATABASE}"
