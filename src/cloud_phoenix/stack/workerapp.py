"""The application as the stack serves it: `create_app` with the stack's parts plugged in.

Both `phoenix up` (its gunicorn workers serve `from_environment()`, PHOENIX_WORKER_APP's
default) and `phoenix serve` (`served_app`) add the live operations page and the figures of
the supervisor and the backups to /metrics; `phoenix serve` also keeps its collector child
alive for as long as it serves.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import partial

from cloud_phoenix.app import Extension, PhoenixApp, create_app
from cloud_phoenix.backup.catalog import scan
from cloud_phoenix.collector.keeper import CollectorChild
from cloud_phoenix.config import Settings
from cloud_phoenix.stack import ops
from cloud_phoenix.stack.status import StatusError, read_status
from cloud_phoenix.store import LogStore

log = logging.getLogger(__name__)


def operations(settings: Settings) -> Extension:
    """The operations page (/ops, /ops/data, its files) and the operations figures."""
    return Extension(
        routers=(ops.router,),
        static=(ops.STATIC,),
        figures=(partial(operations_figures, settings),),
    )


def worker_app(settings: Settings, store: LogStore | None = None) -> PhoenixApp:
    """What each gunicorn worker of `phoenix up` serves (its collector is the supervisor's)."""
    return create_app(settings, store, [operations(settings)])


def served_app(settings: Settings, store: LogStore | None = None) -> PhoenixApp:
    """What `phoenix serve` serves: a worker's application, and its own collector as a child
    process unless PHOENIX_SERVE_COLLECTOR is false (a sidecar collects then)."""
    extensions = [operations(settings)]
    if settings.serve_collector:
        # Stopped on the way out with the child's last pass, or the server's: a stop at any
        # instant leaves nothing in the journal uncollected (collector/keeper.py).
        extensions.append(Extension(lifetime=partial(CollectorChild, settings)))
    return create_app(settings, store, extensions)


def from_environment() -> PhoenixApp:
    """The application for gunicorn's workers (PHOENIX_WORKER_APP's default), from os.environ."""
    return worker_app(Settings.from_env(os.environ))


# The supervisor's figures, as its status file states them.
def operations_figures(settings: Settings) -> dict[str, float]:
    """Workers, CPU peaks, notifications and backups, read at scrape time (the same in every
    worker)."""
    figures: dict[str, float] = {}
    try:
        status = read_status(settings.run_dir)
    except StatusError as exc:  # damaged, or another version's: the backups still count
        log.debug("status file unreadable: %s", exc)
        status = None
    if status is not None:  # the supervisor of `phoenix up` writes it
        # The autoscaler's count and what runs, as of the status file (written every second).
        figures["phoenix_workers_desired"] = float(status.workers.desired)
        figures["phoenix_workers_running"] = float(status.workers.running)
        operations = status.operations
        figures["phoenix_cpu_in_peak"] = float(operations.cpu_in_peak)
        figures["phoenix_cpu_peaks_total"] = float(operations.cpu_peaks)
        figures["phoenix_notifications_sent_total"] = float(operations.notifications_sent)
        figures["phoenix_notifications_failed_total"] = float(operations.notifications_failed)
        figures["phoenix_backups_failed_total"] = float(operations.backups_failed)
        figures["phoenix_edge_dropped_logs_total"] = float(operations.edge_dropped_logs)
    backups = [entry for entry in scan(settings.backups_dir) if entry.good]
    figures["phoenix_backups"] = float(len(backups))
    if backups:
        newest = max(entry.created_at for entry in backups)
        figures["phoenix_last_backup_age_seconds"] = max(
            0.0, (datetime.now(UTC) - newest).total_seconds()
        )
    return figures
