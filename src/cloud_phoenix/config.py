"""One settings object, read once from an injectable environment mapping."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has a value the application cannot use; the message names the variable."""


def _parse(
    environ: Mapping[str, str],
    name: str,
    default: T,
    convert: Callable[[str], T],
    check: Callable[[T], bool],
    expected: str,
) -> T:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected}") from None
    if not check(value):
        raise ConfigError(f"{name}={raw!r} is out of range: expected {expected}")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the application and the platform read from the environment."""

    port: int = 8080
    host: str = "127.0.0.1"
    home: Path = Path("var")
    db_url: str = ""
    log_level: str = "info"
    access_log_stdout: bool = True
    cert_pool_size: int = 4
    cert_concurrency: int = 2
    cert_max_wait: float = 5.0
    ready_max_lag: float = 30.0
    collect_batch: int = 500
    collect_interval: float = 0.2
    collector_in_process: bool = True
    metrics_dir: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build the settings from `environ` (os.environ in the entry point, a dict in tests)."""
        home = Path(environ.get("PHOENIX_HOME") or "var")
        db_url = environ.get("DB_CONNECTION_STRING") or ""
        if not db_url:
            db_url = f"sqlite:///{(home / 'db' / 'phoenix.sqlite3').as_posix()}"
        if "://" not in db_url:
            raise ConfigError(
                "DB_CONNECTION_STRING must be a URL: sqlite:///path, postgresql://... "
                "or mongodb://..."
            )
        level = (environ.get("PHOENIX_LOG_LEVEL") or "info").lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ConfigError(
                f"PHOENIX_LOG_LEVEL={level!r} is not valid: expected debug, info, warning, "
                "error or critical"
            )
        cores = os.cpu_count() or 1
        return cls(
            port=_parse(
                environ, "PORT", 8080, int, lambda v: 0 <= v <= 65535, "a TCP port, 0-65535"
            ),
            host=environ.get("PHOENIX_HOST") or "127.0.0.1",
            home=home,
            db_url=db_url,
            log_level=level,
            access_log_stdout=_parse(
                environ, "PHOENIX_ACCESS_LOG", True, _bool, lambda v: True, "true or false"
            ),
            cert_pool_size=_parse(
                environ,
                "PHOENIX_CERT_POOL",
                4,
                int,
                lambda v: 0 <= v <= 64,
                "a whole number of spare keys, 0-64",
            ),
            cert_concurrency=_parse(
                environ,
                "PHOENIX_CERT_CONCURRENCY",
                cores,
                int,
                lambda v: 1 <= v <= 64,
                "a whole number, 1-64",
            ),
            cert_max_wait=_parse(
                environ,
                "PHOENIX_CERT_MAX_WAIT",
                5.0,
                float,
                lambda v: 0 < v <= 300,
                "seconds, over 0 and at most 300",
            ),
            ready_max_lag=_parse(
                environ, "PHOENIX_READY_MAX_LAG", 30.0, float, lambda v: v > 0, "seconds, over 0"
            ),
            collect_batch=_parse(
                environ,
                "PHOENIX_COLLECT_BATCH",
                500,
                int,
                lambda v: 1 <= v <= 10_000,
                "a whole number, 1-10000",
            ),
            collect_interval=_parse(
                environ,
                "PHOENIX_COLLECT_INTERVAL",
                0.2,
                float,
                lambda v: 0 < v <= 60,
                "seconds, over 0 and at most 60",
            ),
            collector_in_process=_parse(
                environ,
                "PHOENIX_COLLECTOR_IN_PROCESS",
                True,
                _bool,
                lambda v: True,
                "true or false",
            ),
            metrics_dir=Path(environ["PROMETHEUS_MULTIPROC_DIR"])
            if environ.get("PROMETHEUS_MULTIPROC_DIR")
            else None,
        )

    @property
    def journal_dir(self) -> Path:
        return self.home / "journal"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def backups_dir(self) -> Path:
        return self.home / "backups"
