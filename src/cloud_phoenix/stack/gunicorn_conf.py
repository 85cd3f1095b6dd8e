"""gunicorn hooks for `phoenix up` (loaded with `-c python:cloud_phoenix.stack.gunicorn_conf`)
and its logger class (`--logger-class`).

Everything else is passed on gunicorn's command line by the supervisor.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from cloud_phoenix.app.metricsfold import fold_dead
from cloud_phoenix.config import Settings
from cloud_phoenix.logformat import configure, formatter
from cloud_phoenix.proc.background import die_with_parent

log = logging.getLogger(__name__)


class PhoenixLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, writing as the rest of the stack does (PHOENIX_LOG_FORMAT): its
    own lines, and the root logger's, through which the workers' application logs."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        settings = Settings.from_env(os.environ)  # the environment the supervisor set
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(settings.log_format))
        # Without this the workers' own loggers have no handler: Python's last resort
        # printed their warnings as bare text, and nothing below WARNING.
        configure(cfg.loglevel, settings.log_format, sys.stderr)


def post_fork(server: Any, worker: Any) -> None:
    """A worker must not outlive its master: after a kill -9 of the master, the kernel tells
    each worker with SIGTERM, and it finishes its requests and exits (the new master's
    workers take over the same socket)."""
    die_with_parent(signal.SIGTERM)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multi-process metrics, and fold the counters
    and histograms of every process that is gone into the archive (see metricsfold), so that
    crashes neither add files nor slow a scrape down."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, directory)  # type: ignore[no-untyped-call]
    try:
        fold_dead(Path(directory))
    except Exception:  # an exception here would stop the master: the files wait for the next
        log.exception("metrics fold failed; the files stay until the next worker exits")
