"""The JSON endpoints: crash, certificates, health, readiness, logs, database check, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from cloud_phoenix.app.errors import ErrorBody
from cloud_phoenix.app.requestlog import FINISH_KEY, REQUEST_ID_KEY, worker_id
from cloud_phoenix.app.runtime import Runtime
from cloud_phoenix.certs import (
    DNS_NAME_PATTERN,
    IssuedCertificate,
    SpareKey,
    issue_certificate,
)
from cloud_phoenix.journal import format_time
from cloud_phoenix.platform.collector import measure_lag
from cloud_phoenix.store import Cursor, LogQuery, StoreError, redact_url

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 1  # gunicorn treats 3 and 4 as "cannot boot": never use those
ERROR_503: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Temporarily unable to answer"}
}

router = APIRouter()

# The certificate parameters of /generatecert and /certRender.
CommonName = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,  # the X.509 limit of a common name
        pattern=DNS_NAME_PATTERN,
        description="Common name: a DNS name",
    ),
]
ValidityDays = Annotated[int, Query(ge=1, le=825, description="Validity in days")]


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


class Health(BaseModel):
    status: str
    worker: str
    uptime_s: float


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    lag_seconds: float | None
    lag_bytes: int | None


class LogRecord(BaseModel):
    id: str
    time: str
    method: str
    path: str
    query: str
    status: int
    bytes: int
    duration_ms: float
    remote_addr: str
    user_agent: str
    referrer: str
    worker: str
    request_id: str


class LogsPage(BaseModel):
    records: list[LogRecord]
    count: int
    next: str | None


class CollectorLag(BaseModel):
    bytes: int
    seconds: float
    files_behind: int


class DatabaseCheck(BaseModel):
    backend: str
    target: str
    reachable: bool
    round_trip_ms: float | None
    records: int | None
    collector: CollectorLag | None
    error: str | None


@router.get(
    "/crash",
    summary="Kill the serving worker process at once",
    description="Records the request, then exits the worker with no cleanup. "
    "The platform restarts it; other clients must not notice.",
)
async def crash(request: Request) -> Response:
    request.scope[FINISH_KEY](500)
    log.warning(
        "GET /crash (request %s): worker %s exits now",
        request.scope.get(REQUEST_ID_KEY),
        worker_id(),
    )
    os._exit(CRASH_EXIT_CODE)


@router.get(
    "/generatecert",
    response_model=IssuedCertificate,  # a dataclass: FastAPI documents it as it is
    responses=ERROR_503,
    summary="A fresh RSA-2048 key and its self-signed certificate",
    description="Each key is handed out once and never stored or logged.",
)
async def generate_cert(
    request: Request,
    cn: CommonName = "localhost",
    days: ValidityDays = 365,
) -> JSONResponse:
    issued = await issue_certificate_for(runtime(request), cn, days)
    return JSONResponse(asdict(issued), headers={"Cache-Control": "no-store"})


def _sign(spare: SpareKey, cn: str, days: int) -> IssuedCertificate:
    return issue_certificate(spare.private_key(), cn, days)


async def issue_certificate_for(rt: Runtime, cn: str, days: int) -> IssuedCertificate:
    spare = await rt.pool.take()
    issued = spare.certificate(cn, days, time.monotonic())
    if issued is None:  # other parameters, or a spare that waited long: sign it now
        issued = await asyncio.to_thread(_sign, spare, cn, days)
    rt.metrics.certificates.inc()
    return issued


@router.get("/health", response_model=Health, summary="Liveness: this process serves")
async def health(request: Request) -> Health:
    rt = runtime(request)
    return Health(status="ok", worker=worker_id(), uptime_s=round(time.monotonic() - rt.started, 3))


@router.get(
    "/ready",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
    summary="Readiness: the store answers and the collector keeps up",
)
def ready(request: Request) -> JSONResponse:
    rt = runtime(request)
    reasons: list[str] = []
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    if rt.journal.last_error:
        reasons.append(f"journal not writable: {rt.journal.last_error}")
    try:
        rt.store.ping()
        lag = measure_lag(rt.store.positions(), rt.settings.journal_dir, datetime.now(UTC))
        lag_seconds, lag_bytes = round(lag.seconds, 3), lag.bytes
        if lag.seconds > rt.settings.ready_max_lag:
            reasons.append(
                f"collector is {lag.seconds:.0f} s behind the journal "
                f"(bound {rt.settings.ready_max_lag:g} s)"
            )
    except StoreError as exc:
        reasons.append(f"store unavailable: {exc}")
    body = Readiness(
        ready=not reasons, reasons=reasons, lag_seconds=lag_seconds, lag_bytes=lag_bytes
    )
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


# RFC 3339 date-times, offset required; no dates alone, no Unix timestamps.
TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


def _query_time(value: str | None, name: str) -> str | None:
    """A time filter as the stores compare it; out-of-range UTC instants are clamped."""
    if value is None:
        return None
    try:
        if not TIME_RE.match(value):
            raise ValueError(value)
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise _bad_request(
            name, "not a date-time: use RFC 3339, e.g. 2026-11-27T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return format_time(moment)
    except OverflowError:  # e.g. 0001-01-01T00:00+00:05 is before the first UTC instant
        offset = moment.utcoffset()
        return format_time(EARLIEST if offset and offset.total_seconds() > 0 else LATEST)


def _bad_request(name: str, detail: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("query", name), "msg": detail, "type": "value_error"}])


def read_logs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000, description="Records per page")] = 100,
    before: Annotated[
        str | None, Query(max_length=200, description="The `next` cursor of the previous page")
    ] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status")] = None,
    path: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=2048,
            pattern=r"^/[!-~]*$",
            description="Exact request path, e.g. /crash",
        ),
    ] = None,
    since: Annotated[
        str | None,
        Query(
            description="From this time, inclusive (RFC 3339, e.g. 2026-11-27T10:00:00Z)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            description="Until this time, exclusive (RFC 3339)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> LogsPage:
    cursor: Cursor | None = None
    if before is not None:
        try:
            cursor = Cursor.decode(before)
        except ValueError as exc:
            raise _bad_request("before", str(exc)) from None
    query = LogQuery(
        limit=limit,
        before=cursor,
        status=status,
        path=path,
        since=_query_time(since, "since"),
        until=_query_time(until, "until"),
    )
    rows = runtime(request).store.query(query)
    records = [LogRecord(id=row.pos, **row.record._asdict()) for row in rows]
    next_cursor = None
    if len(rows) == limit:
        next_cursor = Cursor(rows[-1].record.time, rows[-1].pos).encode()
    return LogsPage(records=records, count=len(records), next=next_cursor)


router.add_api_route(
    "/logs",
    read_logs,
    methods=["GET"],
    response_model=LogsPage,
    responses=ERROR_503,
    summary="Recorded requests, newest first, paginated",
)
router.add_api_route(
    "/querylogs",
    read_logs,
    methods=["GET"],
    response_model=LogsPage,
    responses=ERROR_503,
    operation_id="querylogs",
    summary="Alias of /logs (the Node application's name)",
)


def check_db(request: Request) -> JSONResponse:
    rt = runtime(request)
    target = redact_url(rt.settings.db_url)
    try:
        started = time.perf_counter()
        rt.store.ping()
        round_trip = (time.perf_counter() - started) * 1000
        records = rt.store.count()
        lag = measure_lag(rt.store.positions(), rt.settings.journal_dir, datetime.now(UTC))
    except StoreError as exc:
        body = DatabaseCheck(
            backend=rt.store.backend,
            target=target,
            reachable=False,
            round_trip_ms=None,
            records=None,
            collector=None,
            error=str(exc),
        )
        return JSONResponse(body.model_dump(), status_code=503)
    body = DatabaseCheck(
        backend=rt.store.backend,
        target=target,
        reachable=True,
        round_trip_ms=round(round_trip, 3),
        records=records,
        collector=CollectorLag(
            bytes=lag.bytes, seconds=round(lag.seconds, 3), files_behind=lag.files_behind
        ),
        error=None,
    )
    return JSONResponse(body.model_dump())


_CHECK_503: dict[int | str, dict[str, Any]] = {
    503: {"model": DatabaseCheck, "description": "The store cannot be reached"}
}
router.add_api_route(
    "/checkdb",
    check_db,
    methods=["GET"],
    response_model=DatabaseCheck,
    responses=_CHECK_503,
    summary="Store backend, reachability, round trip, records, collector lag",
)
router.add_api_route(
    "/checkdbConn",
    check_db,
    methods=["GET"],
    response_model=DatabaseCheck,
    responses=_CHECK_503,
    operation_id="checkdbConn",
    summary="Alias of /checkdb (the Node application's name)",
)


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(runtime(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
