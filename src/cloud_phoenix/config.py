"""One settings object, read once from an injectable environment mapping."""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# What gunicorn's workers serve: the application with the stack's parts plugged in.
WORKER_APP = "cloud_phoenix.stack.workerapp:from_environment()"
# An instance's name, as the journal's file names and record positions carry it (the journal
# builds its patterns from these).
INSTANCE_MAX = 63  # characters of an instance name
INSTANCE_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{INSTANCE_MAX - 1}}}"
# PHOENIX_INSTANCE=volume: the id made once and kept in PHOENIX_HOME, under this name.
INSTANCE_FILE = "instance-id"
BACKUP_OFF = "off"  # PHOENIX_BACKUP_AT: no daily backup inside `phoenix up`
# A secret file holds one URL; anything much longer is not one.
_SECRET_MAX_BYTES = 65536


class ConfigError(ValueError):
    """A setting has a value the application cannot use; the message names the variable."""


class _Reader:
    """Typed, range-checked reads of environment variables; blank means the default."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ

    def _raw(self, name: str) -> str | None:
        raw = self.environ.get(name)
        return None if raw is None or not raw.strip() else raw.strip()

    def number(
        self, name: str, default: float, low: float, high: float, whole: bool = False
    ) -> float:
        raw = self._raw(name)
        if raw is None:
            return default
        kind = "a whole number" if whole else "a number"
        try:
            value = int(raw) if whole else float(raw)
        except ValueError:
            raise ConfigError(
                f"{name}={raw!r} is not valid: expected {kind}, {low:g} to {high:g}"
            ) from None
        if not low <= value <= high:
            raise ConfigError(
                f"{name}={raw!r} is out of range: expected {kind}, {low:g} to {high:g}"
            )
        return value

    def whole(self, name: str, default: int, low: int, high: int) -> int:
        return int(self.number(name, default, low, high, whole=True))

    def flag(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() in {"1", "true", "yes", "on"}:
            return True
        if raw.lower() in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={raw!r} is not valid: expected true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = (self._raw(name) or default).lower()
        if raw not in choices:
            raise ConfigError(f"{name}={raw!r} is not valid: expected one of {', '.join(choices)}")
        return raw


def _instance(raw: str, home: Path) -> str:
    """PHOENIX_INSTANCE: empty (one host), `hostname` (the pod's or task's), `volume` (an id
    kept in PHOENIX_HOME), or a name."""
    keyword = raw.strip().lower()
    if keyword == "volume":
        return volume_instance(home)
    name = socket.gethostname() if keyword == "hostname" else raw.strip()
    name = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-_")[:INSTANCE_MAX]
    if raw.strip() and not name:
        raise ConfigError(f"PHOENIX_INSTANCE={raw!r} is not valid: letters, digits, '-', '_'")
    return name


def volume_instance(home: Path) -> str:
    """The instance id kept in `home`/instance-id, made at random by the first call.

    Kept with the journal it names, so a replica that inherits the volume keeps the id and
    no other replica can ever take it (an address or a task slot can be reused). Made
    atomically: a complete file is linked into place, so processes starting at once agree.
    """
    path = home / INSTANCE_FILE
    try:
        with open(path, "rb") as held:
            text = held.read(INSTANCE_MAX + 2)
    except FileNotFoundError:
        return _make_instance_file(path)
    except OSError as exc:
        raise ConfigError(
            f"PHOENIX_INSTANCE=volume: cannot read {path}: {exc.strerror or exc}"
        ) from None
    name = text.decode("ascii", errors="replace").strip()
    if not re.fullmatch(INSTANCE_PATTERN, name):  # the file's text is not shown: any bytes
        raise ConfigError(
            f"PHOENIX_INSTANCE=volume: {path} is damaged: it holds no instance id (1 to "
            f"{INSTANCE_MAX} letters, digits, '-' or '_'); put back the id it held (this "
            "instance's journal files are named after it), or remove the file to make a new id"
        )
    return name


def _make_instance_file(path: Path) -> str:
    name = secrets.token_hex(8)
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, f"{name}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(scratch, path)  # never replaces: of two at once, the first one wins
        except FileExistsError:
            return volume_instance(path.parent)
        finally:
            scratch.unlink()
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the id must outlive a power cut once it has named a record
        finally:
            os.close(directory)
    except OSError as exc:
        raise ConfigError(
            f"PHOENIX_INSTANCE=volume keeps the instance id in {path}, which cannot be "
            f"written ({exc.strerror or exc}): set PHOENIX_HOME to a folder this user can write"
        ) from None
    return name


def _database_url(environ: Mapping[str, str], home: Path) -> str:
    """DB_CONNECTION_STRING, or the URL in the file DB_CONNECTION_STRING_FILE names (a
    Docker or Kubernetes secret); neither: SQLite under `home`. No message quotes the URL."""
    url = environ.get("DB_CONNECTION_STRING") or ""
    secret_file = (environ.get("DB_CONNECTION_STRING_FILE") or "").strip()
    must = "DB_CONNECTION_STRING must be"
    if url.strip() and secret_file:
        raise ConfigError(
            "DB_CONNECTION_STRING and DB_CONNECTION_STRING_FILE are both set: set only one "
            "(the file is for a secret the orchestrator mounts)"
        )
    if secret_file:
        url = _read_secret(secret_file)
        must = f"DB_CONNECTION_STRING_FILE={secret_file!r} must hold"
    if not url:
        return f"sqlite:///{(home / 'db' / 'phoenix.sqlite3').as_posix()}"
    if "://" not in url:
        raise ConfigError(f"{must} a URL: sqlite:///path, postgresql://... or mongodb://...")
    return url


def _read_secret(path: str) -> str:
    name = f"DB_CONNECTION_STRING_FILE={path!r}"
    try:
        with open(path, "rb") as held:
            data = held.read(_SECRET_MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read: {exc.strerror or exc}") from None
    if len(data) > _SECRET_MAX_BYTES:
        raise ConfigError(f"{name} is over {_SECRET_MAX_BYTES} bytes: it holds no one URL")
    try:
        url = data.decode("utf-8").strip()  # a secret file usually ends in a line end
    except UnicodeDecodeError:
        raise ConfigError(f"{name} is not UTF-8 text") from None
    if not url:
        raise ConfigError(f"{name} is empty: it should hold the database URL")
    return url


def _clock_time(raw: str) -> str:
    """HH:MM, 24-hour clock, or `off`."""
    if raw.strip().lower() == BACKUP_OFF:
        return BACKUP_OFF
    hours, sep, minutes = raw.strip().partition(":")
    if not (
        sep
        and hours.isdigit()
        and minutes.isdigit()
        and len(minutes) == 2
        and 0 <= int(hours) <= 23
        and 0 <= int(minutes) <= 59
    ):
        raise ConfigError(
            f"PHOENIX_BACKUP_AT={raw!r} is not valid: expected HH:MM, e.g. 03:00, or off"
        )
    return f"{int(hours):02d}:{minutes}"


def _cert_tick(milliseconds: float) -> float:
    """The key maker's tick period in seconds: 0 (none), or 0.1 ms and more (a real-time
    thread waking more often than that would take a CPU's time for itself)."""
    if 0 < milliseconds < 0.1:
        raise ConfigError(
            f"PHOENIX_CERT_TICK_MS={milliseconds:g} is out of range: expected 0 (no tick) "
            "or 0.1 to 100"
        )
    return milliseconds / 1000


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the application and the platform read from the environment.

    Each field's default here is its one declaration: `from_env` reads it from `cls()`.
    """

    port: int = 8080
    host: str = "127.0.0.1"
    # SO_REUSEPORT on the public socket: a rolling update on the host network starts the new
    # task on the same address and port while the old one drains. Off, a second server on
    # the port is refused ("port taken"), as it should be on one host.
    reuse_port: bool = False
    home: Path = Path("var")
    db_url: str = ""  # from_env: a SQLite file under `home` when DB_CONNECTION_STRING is unset
    log_level: str = "info"
    access_log_stdout: bool = True
    cert_pool_size: int = 4
    cert_concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    cert_max_wait: float = 5.0
    cert_tick: float = 0.0  # seconds; 0: no scheduling tick (real-time threads) unless asked
    ready_max_lag: float = 30.0
    collect_batch: int = 500
    collect_interval: float = 0.2
    serve_collector: bool = True
    metrics_dir: Path | None = None
    min_workers: int = 1
    max_workers: int = 8
    scale_rps: float = 10.0
    scale_in_window: float = 60.0
    graceful_timeout: float = 20.0
    haproxy_bin: str = ""  # empty: found on PATH or in /usr/sbin
    # Proxies whose X-Forwarded-For is believed: the edge on one host; a load balancer's
    # network in a cluster (e.g. the VPC's range, or * behind an ALB that is the only way in).
    forwarded_allow_ips: str = "127.0.0.1"
    instance: str = ""  # names this instance's journal files where several share a store
    cpu_interval: float = 1.0
    cpu_threshold: float = 80.0
    cpu_peak_seconds: float = 2.0
    notify_urls: tuple[str, ...] = ()
    backup_at: str = "03:00"  # local time, HH:MM; or BACKUP_OFF
    backup_retention_days: int = 7
    # What gunicorn's workers serve; another app only to measure the platform against it.
    worker_app: str = WORKER_APP

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build the settings from `environ` (os.environ in the entry point, a dict in tests)
        and the files it names (the database URL's, PHOENIX_HOME/instance-id)."""
        read = _Reader(environ)
        default = cls()
        home = Path(environ.get("PHOENIX_HOME") or default.home)
        db_url = _database_url(environ, home)
        min_workers = read.whole("PHOENIX_MIN_WORKERS", default.min_workers, 1, 64)
        max_workers = read.whole(
            "PHOENIX_MAX_WORKERS", max(default.max_workers, min_workers), 1, 64
        )
        if min_workers > max_workers:
            raise ConfigError(
                f"PHOENIX_MIN_WORKERS={min_workers} is above PHOENIX_MAX_WORKERS={max_workers}"
            )
        metrics_dir = environ.get("PROMETHEUS_MULTIPROC_DIR")
        return cls(
            port=read.whole("PORT", default.port, 0, 65535),
            host=environ.get("PHOENIX_HOST") or default.host,
            reuse_port=read.flag("PHOENIX_REUSE_PORT", default.reuse_port),
            home=home,
            db_url=db_url,
            log_level=read.choice("PHOENIX_LOG_LEVEL", default.log_level, LOG_LEVELS),
            access_log_stdout=read.flag("PHOENIX_ACCESS_LOG", default.access_log_stdout),
            cert_pool_size=read.whole("PHOENIX_CERT_POOL", default.cert_pool_size, 0, 64),
            cert_concurrency=read.whole(
                "PHOENIX_CERT_CONCURRENCY", default.cert_concurrency, 1, 64
            ),
            cert_max_wait=read.number("PHOENIX_CERT_MAX_WAIT", default.cert_max_wait, 0.001, 300),
            cert_tick=_cert_tick(
                read.number("PHOENIX_CERT_TICK_MS", default.cert_tick * 1000, 0, 100)
            ),
            ready_max_lag=read.number("PHOENIX_READY_MAX_LAG", default.ready_max_lag, 0.1, 86400),
            collect_batch=read.whole("PHOENIX_COLLECT_BATCH", default.collect_batch, 1, 10_000),
            collect_interval=read.number(
                "PHOENIX_COLLECT_INTERVAL", default.collect_interval, 0.01, 60
            ),
            serve_collector=read.flag("PHOENIX_SERVE_COLLECTOR", default.serve_collector),
            metrics_dir=Path(metrics_dir) if metrics_dir else None,
            min_workers=min_workers,
            max_workers=max_workers,
            scale_rps=read.number("PHOENIX_SCALE_RPS", default.scale_rps, 0.1, 100_000),
            scale_in_window=read.number(
                "PHOENIX_SCALE_IN_WINDOW", default.scale_in_window, 0, 3600
            ),
            graceful_timeout=read.number(
                "PHOENIX_GRACEFUL_TIMEOUT", default.graceful_timeout, 1, 600
            ),
            haproxy_bin=environ.get("PHOENIX_HAPROXY") or default.haproxy_bin,
            forwarded_allow_ips=(
                environ.get("PHOENIX_FORWARDED_ALLOW_IPS") or default.forwarded_allow_ips
            ),
            instance=_instance(environ.get("PHOENIX_INSTANCE") or default.instance, home),
            cpu_interval=read.number("PHOENIX_CPU_INTERVAL", default.cpu_interval, 0.1, 60),
            cpu_threshold=read.number("PHOENIX_CPU_THRESHOLD", default.cpu_threshold, 1, 100),
            cpu_peak_seconds=read.number(
                "PHOENIX_CPU_PEAK_SECONDS", default.cpu_peak_seconds, 0, 3600
            ),
            notify_urls=tuple(
                url.strip()
                for url in (environ.get("PHOENIX_NOTIFY_URLS") or "").split(",")
                if url.strip()
            ),
            backup_at=_clock_time(environ.get("PHOENIX_BACKUP_AT") or default.backup_at),
            backup_retention_days=read.whole(
                "PHOENIX_BACKUP_RETENTION_DAYS", default.backup_retention_days, 1, 3650
            ),
            worker_app=environ.get("PHOENIX_WORKER_APP") or default.worker_app,
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
