from __future__ import annotations

from pathlib import Path

import pytest

from cloud_phoenix.config import ConfigError, Settings


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


@pytest.mark.parametrize("value", ["3", "25:00", "03:60", "noon", "03:5"])
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
