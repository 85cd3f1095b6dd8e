"""Every error as JSON `{"error": ..., "detail": ...}`: never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from cloud_phoenix.app.requestlog import REQUEST_ID_KEY
from cloud_phoenix.certs.keymaker import KeyMakerError
from cloud_phoenix.certs.pool import PoolBusy
from cloud_phoenix.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str
    detail: str


# The `responses` entry of a route that answers 503 when the store or the key pool cannot.
ERROR_503: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "Temporarily unable to answer"}
}


def error_response(
    status: int, detail: str, headers: Mapping[str, str] | None = None, error: str | None = None
) -> JSONResponse:
    body = {"error": error or HTTPStatus(status).phrase.lower(), "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "query")
        parts.append(f"{where or 'request'}: {problem.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.url.path}; GET / lists them"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    else:
        detail = str(exc.detail)
    return error_response(exc.status_code, detail, headers=exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, _validation_detail(exc), error="invalid request")


def store_failure(request: Request, exc: StoreError) -> str:
    """Log a store failure in full; return the public reason, which names no server.

    The store's message says which server and why (refused, timed out, wrong password):
    for the operator, in the log. The public gets the kind and the request id to look for.
    """
    request_id = request.scope.get(REQUEST_ID_KEY, "")
    unavailable = isinstance(exc, StoreUnavailable)
    log.log(
        logging.WARNING if unavailable else logging.ERROR,
        "%s on %s (request %s): %s",
        "store unavailable" if unavailable else "store error",
        request.url.path,
        request_id,
        exc,
    )
    reason = "database unavailable" if unavailable else "database error"
    return f"{reason}; the server log has the details under request id {request_id}"


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreUnavailable)
    return error_response(
        503, store_failure(request, exc), headers={"Retry-After": "5"}, error="database unavailable"
    )


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StoreError)
    return error_response(500, store_failure(request, exc), error="database error")


async def _pool_busy(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PoolBusy)
    request.app.state.runtime.metrics.cert_rejected.inc()
    return error_response(
        503,
        f"{exc}; retry after {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
        error="certificate generation is saturated",
    )


async def _key_maker_failed(_request: Request, exc: Exception) -> JSONResponse:
    # Logged where it happened (the key maker, the pool); the next request may well succeed.
    return error_response(
        503,
        f"{exc}; retry after 1 s",
        headers={"Retry-After": "1"},
        error="certificate generation failed",
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request.scope.get(REQUEST_ID_KEY, "")
    log.exception(
        "unhandled error on %s %s (request %s)", request.method, request.url.path, request_id
    )
    return error_response(
        500,
        f"unexpected error; the server log has the details under request id {request_id}",
        error="internal error",
    )


def install(app: FastAPI) -> None:
    """Register the handlers; the order of specificity is the exception classes'."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(StoreError, _store_error)
    app.add_exception_handler(PoolBusy, _pool_busy)
    app.add_exception_handler(KeyMakerError, _key_maker_failed)
    app.add_exception_handler(Exception, _unexpected)


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's 422 with the 400 this application answers, in the OpenAPI document."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ErrorBody.model_json_schema()
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for code, response in responses.items():
                # An error body is JSON even where the route's success is an HTML page.
                content = response.get("content", {})
                if code >= "400" and "text/html" in content and "application/json" not in content:
                    content["application/json"] = content.pop("text/html")
            if responses.pop("422", None) is not None:
                responses["400"] = {
                    "description": "Invalid parameters",
                    "content": {"application/json": {"schema": ref}},
                }
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema
