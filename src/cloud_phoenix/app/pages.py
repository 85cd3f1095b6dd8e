"""The HTML pages: the endpoint catalogue at `/` and the certificate page `/certRender`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, Template, select_autoescape

from cloud_phoenix.app.errors import ErrorBody
from cloud_phoenix.app.routes import CommonName, ValidityDays, issue_certificate_for
from cloud_phoenix.app.runtime import runtime

TEMPLATES = Path(__file__).parent / "templates"
CONFIRM = {"/crash": "This kills the worker that answers. The platform must bring it back. Go on?"}

router = APIRouter()


def templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(), auto_reload=False
    )


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    description: str
    default: str
    kind: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str
    summary: str
    description: str
    parameters: list[Parameter]
    confirm: str
    html: bool


def catalogue(openapi: dict[str, Any]) -> list[Endpoint]:
    """The GET endpoints of the OpenAPI document, in the order the application declares them."""
    endpoints = []
    for path, operations in openapi.get("paths", {}).items():
        operation = operations.get("get")
        if operation is None:
            continue
        parameters = [
            Parameter(
                name=p["name"],
                description=p.get("description", ""),
                default=""
                if p.get("schema", {}).get("default") is None
                else str(p["schema"]["default"]),
                kind=_kind(p.get("schema", {})),
            )
            for p in operation.get("parameters", [])
            if p.get("in") == "query"
        ]
        content = operation.get("responses", {}).get("200", {}).get("content", {})
        endpoints.append(
            Endpoint(
                path=path,
                summary=operation.get("summary", ""),
                description=operation.get("description", ""),
                parameters=parameters,
                confirm=CONFIRM.get(path, ""),
                html="text/html" in content,
            )
        )
    return endpoints


def _kind(schema: dict[str, Any]) -> str:
    types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
    return "number" if types & {"integer", "number"} else "text"


def render_index(app: FastAPI) -> bytes:
    """The catalogue page, rendered once: it does not change while the process runs."""
    template: Template = app.state.templates.get_template("index.html")
    return template.render(endpoints=catalogue(app.openapi()), version=app.version).encode()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    # Reached only by what StaticPages lets through (a HEAD, say); GET / never gets here.
    return HTMLResponse(request.app.state.index_page)


@router.get(
    "/certRender",
    response_class=HTMLResponse,
    responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    summary="The same as /generatecert, as an HTML page",
)
async def cert_render(
    request: Request,
    cn: CommonName = "localhost",
    days: ValidityDays = 365,
) -> HTMLResponse:
    issued = await issue_certificate_for(runtime(request), cn, days)
    html = request.app.state.templates.get_template("cert.html").render(cert=issued)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})
