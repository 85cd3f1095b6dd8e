"""The live operations page `/ops` and the figures it polls every second, `/ops/data`; the
stack plugs both into the application (stack/workerapp.py), with the page's template and
static files from this package.

Everything comes from what is already at hand: the status file the supervisor rewrites every
0.1 s, psutil for CPU, and the backup manifests on disk. Each open page calls `/ops/data`
once a second, so it reads no database and never raises: what is missing is null, and an
unreadable status file reads as no supervisor.
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape
from pydantic import BaseModel, Field

from cloud_phoenix.app.requestlog import worker_id
from cloud_phoenix.app.runtime import runtime
from cloud_phoenix.backup.catalog import scan
from cloud_phoenix.backup.schedule import next_run
from cloud_phoenix.config import BACKUP_OFF
from cloud_phoenix.cpuwatch.share import CpuSamples
from cloud_phoenix.journal import format_time
from cloud_phoenix.stack.status import StackStatus, StatusError, read_status, supervisor_alive

log = logging.getLogger(__name__)
_SAMPLES = CpuSamples()  # per serving process: psutil measures between two calls

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"  # served under /static beside the application's
RECENT_EVENTS = 20
CPU_PEAK_PREFIX = "cpu_peak_"

router = APIRouter()


class SupervisorState(BaseModel):
    running: bool = Field(description="A `phoenix up` supervisor is alive in PHOENIX_HOME")
    pid: int | None
    updated: str | None = Field(description="When it last wrote the status (UTC)")
    age_s: float | None = Field(description="How old that status is, in seconds")
    stopping: bool


class WorkerProcess(BaseModel):
    pid: int
    uptime_s: float | None
    cpu_percent: float | None = Field(
        description="Share of the whole host since the previous sample (100 = every core "
        "busy); null until this serving process has sampled it twice"
    )


class Workers(BaseModel):
    desired: int | None
    running: int | None
    processes: list[WorkerProcess] = Field(
        description="The workers, or this one process when no supervisor runs"
    )


class OpsEvent(BaseModel):
    time: str
    kind: str
    message: str
    data: dict[str, Any]


class CpuPeaks(BaseModel):
    count: int | None = Field(
        description="Peaks since the stack started, as the supervisor counts them; null "
        "without a supervisor"
    )
    active: bool = Field(description="The newest CPU peak event is a start")
    recent: list[OpsEvent] = Field(description="cpu_peak_* events among the recent, newest first")


class Backups(BaseModel):
    last: str | None = Field(description="created_at of the newest backup manifest (UTC)")
    next: str | None = Field(
        description="The next scheduled backup (local time with offset); null without a supervisor"
    )
    at: str = Field(description="PHOENIX_BACKUP_AT, HH:MM local time")


class OpsData(BaseModel):
    """One sample of the live operations view."""

    time: str
    served_by: str = Field(description="host:pid of the process that answered")
    supervisor: SupervisorState
    rate_rps: float | None = Field(description="Requests per second at the edge")
    workers: Workers
    host_cpu_percent: float | None = Field(
        description="Host CPU since the previous sample; null on this process's first"
    )
    cpu_count: int
    restarts: int | None = Field(description="Workers and stack processes restarted")
    scale_events: int | None
    cpu_peaks: CpuPeaks
    events: list[OpsEvent] = Field(description=f"The last {RECENT_EVENTS}, newest first")
    backups: Backups


@router.get(
    "/ops",
    response_class=HTMLResponse,
    summary="Live operations view: rate, workers, CPU, restarts, backups",
    description="An HTML page that polls /ops/data every second and draws it; "
    "keep it open during a drill.",
)
async def ops_page(request: Request) -> HTMLResponse:
    html = _page().render(version=request.app.version)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


@cache
def _page() -> Template:
    templates = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(), auto_reload=False
    )
    return templates.get_template("ops.html")


@router.get(
    "/ops/data",
    response_model=OpsData,
    summary="The figures of the live operations view, now",
    description="Status file, CPU samples and backup manifests; what is unknown is null.",
)
def ops_data(request: Request, response: Response) -> OpsData:
    response.headers["Cache-Control"] = "no-store"
    rt = runtime(request)
    return collect(rt.settings.run_dir, rt.settings.backups_dir, rt.settings.backup_at, rt.started)


def collect(run_dir: Path, backups_dir: Path, backup_at: str, started: float) -> OpsData:
    """The sample `/ops/data` answers; `started` is this process's monotonic start."""
    now = datetime.now(UTC)
    found = _read_status(run_dir)
    # A file left by a supervisor that died (kill -9) is not the stack's state now.
    status = found if found is not None and supervisor_alive(found) else None
    cpus = os.cpu_count() or 1
    pids: list[tuple[int, float | None]]
    if status is None:
        pids = [(os.getpid(), round(time.monotonic() - started, 1))]
    else:
        pids = [(worker.pid, _finite(worker.uptime_s)) for worker in status.workers.pids]
    with _SAMPLES.lock:
        host = _SAMPLES.host_cpu(time.monotonic())
        shares = _SAMPLES.process_cpu([pid for pid, _ in pids], cpus, time.monotonic())
    processes = [
        WorkerProcess(pid=pid, uptime_s=uptime, cpu_percent=shares.get(pid)) for pid, uptime in pids
    ]
    newest = last_backup(backups_dir)
    if status is None:
        return OpsData(
            time=format_time(now),
            served_by=worker_id(),
            supervisor=SupervisorState(
                running=False,
                pid=None,
                # When a dead supervisor left its file: when it last wrote.
                updated=found.updated if found else None,
                age_s=_age(found.updated, now) if found else None,
                stopping=False,
            ),
            rate_rps=None,
            workers=Workers(desired=None, running=None, processes=processes),
            host_cpu_percent=host,
            cpu_count=cpus,
            restarts=None,
            scale_events=None,
            cpu_peaks=CpuPeaks(count=None, active=False, recent=[]),
            events=[],
            backups=Backups(last=newest, next=None, at=backup_at),
        )
    events = [
        OpsEvent(time=e.time, kind=e.kind, message=e.message, data=e.data)
        for e in status.events[::-1][:RECENT_EVENTS]
    ]
    peaks = [e for e in events if e.kind.startswith(CPU_PEAK_PREFIX)]
    return OpsData(
        time=format_time(now),
        served_by=worker_id(),
        supervisor=SupervisorState(
            running=True,
            pid=status.supervisor_pid,
            updated=status.updated,
            age_s=_age(status.updated, now),
            stopping=status.stopping,
        ),
        rate_rps=_finite(status.rate_rps),
        workers=Workers(
            desired=status.workers.desired, running=status.workers.running, processes=processes
        ),
        host_cpu_percent=host,
        cpu_count=cpus,
        restarts=status.restarts,
        scale_events=status.scale_events,
        cpu_peaks=CpuPeaks(
            count=status.operations.cpu_peaks,
            active=bool(peaks) and peaks[0].kind == f"{CPU_PEAK_PREFIX}started",
            recent=peaks,
        ),
        events=events,
        backups=Backups(last=newest, next=next_backup(backup_at, now), at=backup_at),
    )


def _read_status(run_dir: Path) -> StackStatus | None:
    try:
        return read_status(run_dir)
    except StatusError as exc:  # damaged, or another version's: as good as missing
        log.debug("status file unreadable: %s", exc)
        return None


# -- backups ------------------------------------------------------------------------------


def last_backup(backups_dir: Path) -> str | None:
    """When the newest good backup was made (as /metrics counts it), or None."""
    try:
        good = [entry.created_at for entry in scan(backups_dir) if entry.good]
    except OSError as exc:  # the folder unreadable: as good as none, never a 500
        log.debug("backups unreadable: %s", exc)
        return None
    return format_time(max(good)) if good else None


def next_backup(backup_at: str, now: datetime) -> str | None:
    """The next daily backup after `now`, ISO 8601 with the offset in force on that day."""
    if backup_at == BACKUP_OFF:
        return None
    try:
        local = next_run(now.astimezone().replace(tzinfo=None), backup_at)
        return local.astimezone().isoformat(timespec="seconds")
    except (ValueError, OverflowError):
        return None


# -- figures ------------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    """A figure the page can show: JSON has no NaN nor infinity."""
    return value if value is not None and math.isfinite(value) else None


def _age(updated: str, now: datetime) -> float | None:
    try:
        moment = datetime.fromisoformat(updated)
    except ValueError:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return round(max(0.0, (now - moment).total_seconds()), 2)
