"""What `phoenix up` runs: the command line, environment and sockets of each child (the
collector's command line is the collector's own: collector.keeper.collector_spec)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from cloud_phoenix.config import Settings
from cloud_phoenix.proc.child import ChildSpec
from cloud_phoenix.stack.edge.program import command_line


def child_env(settings: Settings, metrics_dir: Path) -> dict[str, str]:
    """The children's environment: the supervisor's, with the stack's own settings."""
    return {
        **os.environ,
        "PHOENIX_HOME": str(settings.home.resolve()),
        # The name the supervisor resolved (`hostname`, `volume`): every worker and every
        # later generation journals under the same one.
        "PHOENIX_INSTANCE": settings.instance,
        "PHOENIX_SERVE_COLLECTOR": "false",  # the collector is a child of its own
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir.resolve()),  # /metrics sums the workers
    }


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
        "--error-logfile", "-",
        settings.worker_app,
    ]  # fmt: skip
    return ChildSpec(
        "gunicorn", argv, env, pass_fds=(backend_fd,), log_path=settings.logs_dir / "gunicorn.log"
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
        log_path=settings.logs_dir / "haproxy.log",
    )
