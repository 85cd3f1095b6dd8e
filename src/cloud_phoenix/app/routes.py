"""The JSON endpoints: crash, certificates, health, readiness, metrics; the recorded logs and
the database check are logroutes.py's."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from cloud_phoenix.app import logroutes
from cloud_phoenix.app.errors import ERROR_503, store_failure
from cloud_phoenix.app.requestlog import FINISH_KEY, REQUEST_ID_KEY, worker_id
from cloud_phoenix.app.runtime import Runtime, runtime
from cloud_phoenix.certs.keys import (
    DNS_NAME_PATTERN,
    IssuedCertificate,
    SpareKey,
    issue_certificate,
)
from cloud_phoenix.journal.lag import measure_lag
from cloud_phoenix.journal.reuse import moved_names
from cloud_phoenix.store import StoreError

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 1  # gunicorn treats 3 and 4 as "cannot boot": never use those

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


class Health(BaseModel):
    status: str
    worker: str
    uptime_s: float


class Readiness(BaseModel):
    ready: bool
    reasons: list[str]
    lag_seconds: float | None
    lag_bytes: int | None
    notices: list[str] = Field(
        description="What an operator should know that does not make the instance unready: "
        "journal files moved to a new name because another file had theirs"
    )


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
    journal_dir = rt.settings.journal_dir
    try:
        rt.store.ping()
        lag = measure_lag(rt.store.positions, journal_dir, datetime.now(UTC))
        lag_seconds, lag_bytes = round(lag.seconds, 3), lag.bytes
        if lag.seconds > rt.settings.ready_max_lag:
            reasons.append(
                f"collector is {lag.seconds:.0f} s behind the journal "
                f"(bound {rt.settings.ready_max_lag:g} s)"
            )
        reasons.extend(
            f"journal file {name} is shorter than the store's position for its name "
            "(another file had that name, or a crash cut it short): none of it is "
            "collected until the collector moves it to a new name"
            for name in lag.shorter
        )
    except StoreError as exc:
        reasons.append(store_failure(request, exc))
    notices = [
        f"journal file {old} was moved to {new}: the store's position for its name was "
        "another file's, or the file was cut short by a crash; its records are collected "
        "under the new name, none skipped"
        for old, new in moved_names(journal_dir).items()
    ]
    body = Readiness(
        ready=not reasons,
        reasons=reasons,
        lag_seconds=lag_seconds,
        lag_bytes=lag_bytes,
        notices=notices,
    )
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)


router.include_router(logroutes.router)  # here: the catalogue lists them before /metrics


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(runtime(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
