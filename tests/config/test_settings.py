from __future__ import annotations

import os
import string
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from cloud_phoenix.config import (
    BACKUP_OFF,
    INSTANCE_FILE,
    ConfigError,
    Settings,
    volume_instance,
)
from cloud_phoenix.journal import INSTANCE_RE


def test_defaults_keep_the_node_application_names() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.home == Path("var")
    assert settings.db_url == "sqlite:///var/db/phoenix.sqlite3"
    assert settings.journal_dir == Path("var/journal")


def test_absolute_home_gives_an_absolute_sqlite_url(tmp_path: Path) -> None:
    settings = Settings.from_env({"PHOENIX_HOME": str(tmp_path)})
    assert settings.db_url == f"sqlite:///{tmp_path}/db/phoenix.sqlite3"


def test_db_connection_string_is_taken_as_given() -> None:
    url = "postgresql://u:p@db:5432/phoenix"
    assert Settings.from_env({"DB_CONNECTION_STRING": url}).db_url == url


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("PORT", "http", "PORT"),
        ("PORT", "70000", "0 to 65535"),
        ("PHOENIX_CERT_POOL", "-1", "PHOENIX_CERT_POOL"),
        ("PHOENIX_CERT_MAX_WAIT", "0", "out of range"),
        ("PHOENIX_CERT_TICK_MS", "0.05", "0 \\(no tick\\) or 0.1 to 100"),
        ("PHOENIX_CERT_TICK_MS", "101", "out of range"),
        ("PHOENIX_CERT_TICK_MS", "-1", "out of range"),
        ("PHOENIX_MIN_WORKERS", "0", "PHOENIX_MIN_WORKERS"),
        ("PHOENIX_ACCESS_LOG", "maybe", "true or false"),
        ("PHOENIX_SCALE_RPS", "fast", "a number"),
        ("PHOENIX_LOG_LEVEL", "loud", "PHOENIX_LOG_LEVEL"),
        ("DB_CONNECTION_STRING", "just-a-name", "must be a URL"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings.from_env({name: value})


def test_the_key_makers_tick_is_off_unless_asked_and_read_in_milliseconds() -> None:
    assert Settings.from_env({}).cert_tick == 0.0  # no real-time thread unless asked
    assert Settings().cert_tick == 0.0
    assert Settings.from_env({"PHOENIX_CERT_TICK_MS": "1"}).cert_tick == 0.001
    assert Settings.from_env({"PHOENIX_CERT_TICK_MS": "0.5"}).cert_tick == 0.0005
    assert Settings.from_env({"PHOENIX_CERT_TICK_MS": "0"}).cert_tick == 0.0


def test_blank_values_mean_the_default() -> None:
    assert Settings.from_env({"PORT": " "}).port == 8080


def test_min_workers_above_max_is_refused() -> None:
    with pytest.raises(ConfigError, match="PHOENIX_MIN_WORKERS=4 is above PHOENIX_MAX_WORKERS=2"):
        Settings.from_env({"PHOENIX_MIN_WORKERS": "4", "PHOENIX_MAX_WORKERS": "2"})


def test_max_workers_follows_a_high_minimum() -> None:
    assert Settings.from_env({"PHOENIX_MIN_WORKERS": "12"}).max_workers == 12


def test_operations_settings() -> None:
    settings = Settings.from_env(
        {
            "PHOENIX_NOTIFY_URLS": "json://127.0.0.1:9/a, mailto://x ,",
            "PHOENIX_BACKUP_AT": "4:30",
            "PHOENIX_CPU_THRESHOLD": "75",
        }
    )
    assert settings.notify_urls == ("json://127.0.0.1:9/a", "mailto://x")
    assert settings.backup_at == "04:30"
    assert settings.cpu_threshold == 75.0
    assert settings.backup_retention_days == 7


@pytest.mark.parametrize("value", ["3", "25:00", "03:60", "noon", "03:5", "of"])
def test_backup_time_must_be_a_clock_time(value: str) -> None:
    with pytest.raises(ConfigError, match="PHOENIX_BACKUP_AT"):
        Settings.from_env({"PHOENIX_BACKUP_AT": value})


def test_instance_names_are_sanitised_or_taken_from_the_hostname() -> None:
    import socket

    assert Settings.from_env({}).instance == ""
    assert Settings.from_env({"PHOENIX_INSTANCE": "phoenix-7d9f.x"}).instance == "phoenix-7d9f-x"
    assert Settings.from_env({"PHOENIX_INSTANCE": "hostname"}).instance.startswith(
        socket.gethostname()[:3]
    )
    with pytest.raises(ConfigError, match="PHOENIX_INSTANCE"):
        Settings.from_env({"PHOENIX_INSTANCE": "..."})


def test_forwarded_allow_ips() -> None:
    assert Settings.from_env({}).forwarded_allow_ips == "127.0.0.1"
    assert Settings.from_env({"PHOENIX_FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == "*"


README = Path(__file__).parents[2] / "README.md"
# Defaults the README says in words: what setting the variable to mean would be.
SPOKEN_DEFAULTS: dict[str, Callable[[], str]] = {
    "CPU count": lambda: str(os.cpu_count() or 1),
    "found on `PATH`": lambda: "",
    "none": lambda: "",
    "empty": lambda: "",
    "unset": lambda: "",
}


class ReadingEnviron(dict[str, str]):
    """An environment that notes every variable asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)


def markdown_tables(text: str) -> list[list[list[Token]]]:
    """Every table in `text`, read by a Markdown parser: its rows, the header first, each
    row the inline tokens of its cells."""
    tables: list[list[list[Token]]] = []
    row: list[Token] | None = None
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(token)
        elif token.type == "tr_close" and row is not None:
            tables[-1].append(row)
            row = None
    return tables


def readme_configuration() -> dict[str, str]:
    """The README's configuration table: each variable and its default as the cell says it
    (a code span alone is the literal value; "words:..." otherwise)."""
    [table] = [
        rows
        for rows in markdown_tables(README.read_text())
        if [cell.content for cell in rows[0]] == ["variable", "default", "meaning"]
    ]
    defaults: dict[str, str] = {}
    for variable, default, _ in table[1:]:
        name, value = variable.children or [], default.children or []
        assert len(name) == 1 and name[0].type == "code_inline", variable.content
        literal = len(value) == 1 and value[0].type == "code_inline"
        defaults[name[0].content] = value[0].content if literal else f"words:{default.content}"
    return defaults


def documented_value(default: str, home: str) -> str:
    if default.startswith("words:"):
        words = default.removeprefix("words:")
        assert words in SPOKEN_DEFAULTS, f"the README's default {words!r} means what value?"
        return SPOKEN_DEFAULTS[words]()
    return string.Template(default).substitute(PHOENIX_HOME=home)


def test_the_readme_documents_every_variable_the_settings_read() -> None:
    environ = ReadingEnviron()
    Settings.from_env(environ)
    assert set(readme_configuration()) == environ.asked


def test_the_readme_gives_each_variables_default_as_the_settings_have_it() -> None:
    defaults = Settings.from_env({})
    home = defaults.home.as_posix()
    for variable, default in readme_configuration().items():
        value = documented_value(default, home)
        assert Settings.from_env({variable: value}) == defaults, (variable, default)


def test_a_default_is_the_same_built_directly_or_from_an_empty_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 7)  # not the 2 once written in the class
    direct, from_env = Settings(), Settings.from_env({})
    assert replace(direct, db_url=from_env.db_url) == from_env
    assert from_env.cert_concurrency == 7


@pytest.mark.parametrize("raw", ["hostname", "a" * 80, "-x-", "é-pod.1", "pod\n", "0_"])
def test_a_configured_instance_is_a_name_the_journal_takes(raw: str) -> None:
    instance = Settings.from_env({"PHOENIX_INSTANCE": raw}).instance
    assert INSTANCE_RE.match(instance), instance


def test_reuse_port_is_opt_in() -> None:
    assert Settings.from_env({}).reuse_port is False
    assert Settings.from_env({"PHOENIX_REUSE_PORT": "true"}).reuse_port is True
    with pytest.raises(ConfigError, match="PHOENIX_REUSE_PORT"):
        Settings.from_env({"PHOENIX_REUSE_PORT": "sometimes"})


@pytest.mark.parametrize("value", ["off", "OFF", " off "])
def test_the_daily_backup_can_be_turned_off(value: str) -> None:
    assert Settings.from_env({"PHOENIX_BACKUP_AT": value}).backup_at == BACKUP_OFF


# -- DB_CONNECTION_STRING_FILE ------------------------------------------------------------

SECRET_URL = "postgresql://phoenix:hunter2@db.example:5432/phoenix"


def test_the_database_url_is_read_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "phoenix_db_url"
    secret.write_text(SECRET_URL + "\n")  # as `docker secret create` and editors leave it
    settings = Settings.from_env({"DB_CONNECTION_STRING_FILE": str(secret)})
    assert settings.db_url == SECRET_URL


def test_the_url_and_its_file_together_are_refused_naming_both(tmp_path: Path) -> None:
    secret = tmp_path / "phoenix_db_url"
    secret.write_text(SECRET_URL)
    environ = {"DB_CONNECTION_STRING": SECRET_URL, "DB_CONNECTION_STRING_FILE": str(secret)}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(environ)
    message = str(refused.value)
    assert "DB_CONNECTION_STRING and DB_CONNECTION_STRING_FILE" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot be read: No such file"),
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe" + SECRET_URL.encode(), "not UTF-8"),
        (b"hunter2-but-no-scheme\n", "must hold a URL"),
        (b"x" * 70_000, "over 65536 bytes"),
    ],
)
def test_a_secret_file_that_holds_no_url_is_a_clear_error_that_shows_none_of_it(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    secret = tmp_path / "phoenix_db_url"
    if content is not None:
        secret.write_bytes(content)
    with pytest.raises(ConfigError, match=words) as refused:
        Settings.from_env({"DB_CONNECTION_STRING_FILE": str(secret)})
    assert "DB_CONNECTION_STRING_FILE" in str(refused.value) and str(secret) in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_a_secret_file_that_is_a_folder_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        Settings.from_env({"DB_CONNECTION_STRING_FILE": str(tmp_path)})


# -- PHOENIX_INSTANCE=volume --------------------------------------------------------------


def test_a_volume_instance_is_made_once_and_kept_in_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"  # not there yet: made for the id
    environ = {"PHOENIX_HOME": str(home), "PHOENIX_INSTANCE": "volume"}
    first = Settings.from_env(environ).instance
    assert INSTANCE_RE.match(first), first
    assert (home / INSTANCE_FILE).read_text() == f"{first}\n"
    assert Settings.from_env(environ).instance == first  # a restart on the same volume
    assert [p.name for p in home.iterdir()] == [INSTANCE_FILE]  # no scratch file left
    other = Settings.from_env({**environ, "PHOENIX_HOME": str(tmp_path / "other")}).instance
    assert INSTANCE_RE.match(other) and other != first  # a new volume, a new id


def test_processes_that_start_at_once_on_a_new_volume_agree_on_its_id(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    home = tmp_path / "home"
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _n: volume_instance(home), range(32)))
    assert ids == {(home / INSTANCE_FILE).read_text().strip()}
    assert [p.name for p in home.iterdir()] == [INSTANCE_FILE]


def test_an_id_written_by_hand_is_taken(tmp_path: Path) -> None:
    (tmp_path / INSTANCE_FILE).write_text("replica-1\n")
    environ = {"PHOENIX_HOME": str(tmp_path), "PHOENIX_INSTANCE": "Volume"}
    assert Settings.from_env(environ).instance == "replica-1"


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"-x", b"pod.1", b"a" * 64, b"\xff\xfe", b"pod\x1b[31m"]
)
def test_a_damaged_instance_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / INSTANCE_FILE).write_bytes(content)
    environ = {"PHOENIX_HOME": str(tmp_path), "PHOENIX_INSTANCE": "volume"}
    with pytest.raises(ConfigError, match="is damaged: it holds no instance id") as refused:
        Settings.from_env(environ)
    assert "\x1b" not in str(refused.value)
    assert (tmp_path / INSTANCE_FILE).read_bytes() == content  # left for the operator


def test_a_volume_instance_in_a_home_that_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_text("not a folder")
    environ = {"PHOENIX_HOME": str(blocker), "PHOENIX_INSTANCE": "volume"}
    with pytest.raises(ConfigError, match="PHOENIX_INSTANCE=volume"):
        Settings.from_env(environ)
