"""What `phoenix up` runs: the command line, environment and sockets of each child (the
collector's command line is the collector's own: collector.keeper.collector_spec)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from cloud_phoenix.config import Settings
from cloud_phoenix.proc.child import ChildSpec
from cloud_phoenix.proc.relay import Relay
from cloud_phoenix.stack.edge.program import command_line


def child_env(settings: Settings, metrics_dir: Path) -> dict[str, str]:
    """The children's environment: the supervisor's, with the stack's own settings."""
    return {
        **os.environ,
        "PHOENIX_HOME": str(settings.home.resolve()),
        # The name the supervisor resolved (`hostname`, `volume`): every worker and every
        # later generation journals under the same one.
        "PHOENIX_INSTANCE": settings.instance,
        # Every child logs as the supervisor does (settings may not come from os.environ).
        "PHOENIX_LOG_FORMAT": settings.log_format,
        "PHOENIX_LOG_TO": settings.log_to,
        "PHOENIX_SERVE_COLLECTOR": "false",  # the collector is a child of its own
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir.resolve()),  # /metrics sums the workers
    }


def log_path(settings: Settings, name: str) -> Path | None:
    """Where child `name` writes: PHOENIX_HOME/logs/NAME.log, or (PHOENIX_LOG_TO=stdout) the
    supervisor's own output, which a container runtime collects."""
    return settings.logs_dir / f"{name}.log" if settings.log_to == "files" else None


def relay(settings: Settings, logger: str, level: str = "info") -> Relay | None:
    """With PHOENIX_LOG_FORMAT=json, a relay that makes every line of the child's a JSON
    object (those it writes itself pass as they are)."""
    return Relay(logger, level) if settings.log_format == "json" else None


def gunicorn_spec(
    settings: Settings, env: dict[str, str], backend_fd: int, workers: int
) -> ChildSpec:
    """The gunicorn master on the supervisor's backend socket, with `workers` workers."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:cloud_phoenix.stack.gunicorn_conf",
        "--bind", f"fd://{backend_fd}",
        "--workers", str(workers),
        "--worker-class", "cloud_phoenix.stack.worker.PhoenixWorker",
        "--preload",  # app imported once in the master: a respawned worker serves at once
        "--graceful-timeout", f"{settings.graceful_timeout:g}",
        "--timeout", "30",
        "--keep-alive", "75",  # longer than HAProxy's idle keep-alive to the backend
        "--forwarded-allow-ips", settings.forwarded_allow_ips,
        "--log-level", settings.log_level,
        # Its lines, and the workers' (the application's loggers), as the stack's own.
        "--logger-class", "cloud_phoenix.stack.gunicorn_conf.PhoenixLogger",
        "--error-logfile", "-",
        settings.worker_app,
    ]  # fmt: skip
    # What gunicorn writes past its loggers is a traceback or a fatal error's dump.
    return ChildSpec(
        "gunicorn",
        argv,
        env,
        pass_fds=(backend_fd,),
        log_path=log_path(settings, "gunicorn"),
        relay=relay(settings, "gunicorn", "error"),
    )


def haproxy_spec(
    settings: Settings, env: dict[str, str], haproxy: str, config: Path, edge_fd: int
) -> ChildSpec:
    """HAProxy in the foreground on the inherited edge socket; SIGUSR1 is its soft stop."""
    return ChildSpec(
        "haproxy",
        command_line(haproxy, config),
        env,
        pass_fds=(edge_fd,),
        stop_signal=signal.SIGUSR1,
        log_path=log_path(settings, "haproxy"),
        relay=relay(settings, "haproxy"),
    )
