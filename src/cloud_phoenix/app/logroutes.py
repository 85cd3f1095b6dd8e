"""The endpoints read from the log store: the recorded requests (`/logs`, alias `/querylogs`)
and the database check (`/checkdb`, alias `/checkdbConn`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloud_phoenix.app.errors import ERROR_503, store_failure
from cloud_phoenix.app.runtime import runtime
from cloud_phoenix.journal import MAX_VALUE_CHARS, format_time
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.store import Cursor, LogQuery, StoreError, redact_url
from cloud_phoenix.store.base import CURSOR_MAX_LENGTH, CURSOR_PATTERN

router = APIRouter()


_CAPPED = (
    f"at most {MAX_VALUE_CHARS} characters: a longer value is cut there and ends with "
    '"...[truncated N chars]", N the characters cut'
)


class LogRecord(BaseModel):
    id: str
    time: str
    method: str
    path: str = Field(description=f"The decoded path; {_CAPPED}")
    query: str = Field(description=f"The query string as sent, without '?'; {_CAPPED}")
    status: int
    bytes: int
    duration_ms: float
    remote_addr: str = Field(
        description=f"The client's address (X-Forwarded-For from a trusted proxy); {_CAPPED}"
    )
    user_agent: str = Field(description=f"The User-Agent header; {_CAPPED}")
    referrer: str = Field(description=f"The Referer header; {_CAPPED}")
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
        str | None,
        Query(
            max_length=CURSOR_MAX_LENGTH,
            pattern=CURSOR_PATTERN,
            description="The `next` cursor of the previous page",
        ),
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


def _with_alias(path: str, alias: str, endpoint: Callable[..., Any], **options: Any) -> None:
    """`path`, and `alias` (the Node application's name for it) answered by the same endpoint."""
    router.add_api_route(path, endpoint, methods=["GET"], **options)
    options["summary"] = f"Alias of {path} (the Node application's name)"
    router.add_api_route(alias, endpoint, methods=["GET"], operation_id=alias[1:], **options)


_with_alias(
    "/logs",
    "/querylogs",
    read_logs,
    response_model=LogsPage,
    responses=ERROR_503,
    summary="Recorded requests, newest first, paginated",
)


def check_db(request: Request) -> JSONResponse:
    rt = runtime(request)
    target = redact_url(rt.settings.db_url)
    try:
        started = time.perf_counter()
        rt.store.ping()
        round_trip = (time.perf_counter() - started) * 1000
        records = rt.store.count()
        lag = measure_lag(rt.store.positions, rt.settings.journal_dir, datetime.now(UTC))
    except StoreError as exc:
        body = DatabaseCheck(
            backend=rt.store.backend,
            target=target,
            reachable=False,
            round_trip_ms=None,
            records=None,
            collector=None,
            error=store_failure(request, exc),
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
_with_alias(
    "/checkdb",
    "/checkdbConn",
    check_db,
    response_model=DatabaseCheck,
    responses=_CHECK_503,
    summary="Store backend, reachability, round trip, records, collector lag",
)
