"""How every process of the stack writes its log lines: text for a person at a terminal, or
one JSON object per line (PHOENIX_LOG_FORMAT=json) for CloudWatch Logs Insights, Loki or
Elasticsearch to read without a regex.

A JSON line holds `time` (UTC, ISO 8601), `level`, `logger`, `message`, `pid`, the
`request_id` of the request being served where there is one, `exception` for a traceback,
and what a call passes in `extra` (e.g. `event`, which an alarm can match). The values go
through json.dumps: nothing a client sends can end the object or the line.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
FORMATS = ("text", "json")
# The request a serving process is answering (set by the application's request log), so
# that every line logged while answering it carries its id.
REQUEST_ID: ContextVar[str] = ContextVar("phoenix_request_id", default="")

# The attributes every LogRecord has; any other was passed in `extra=` and goes in the line.
_STANDARD = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's copy with ANSI colours
)
_LEVEL_NAMES = {
    "EMERG": "critical",
    "ALERT": "critical",
    "CRIT": "critical",
    "CRITICAL": "critical",
    "ERR": "error",
    "ERROR": "error",
    "WARN": "warning",
    "WARNING": "warning",
    "NOTICE": "info",
    "INFO": "info",
    "DEBUG": "debug",
}
# A level in brackets near the start of a line: HAProxy's "[WARNING]  (7) : ...", gunicorn's
# "[2026-...] [7] [ERROR] ...".
_BRACKETED_LEVEL = re.compile(r"\[(" + "|".join(_LEVEL_NAMES) + r")\]")


def iso_time(epoch: float) -> str:
    """`epoch` as UTC ISO 8601 with microseconds: 2026-05-01T12:00:00.123456Z."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_line(fields: Mapping[str, Any]) -> str:
    """One JSON object on one line (no newline at the end), in ASCII: control characters,
    quotes, backslashes and anything past ASCII escaped (a lone surrogate from a header
    too); anything json cannot encode written as its str()."""
    return json.dumps(fields, default=str, separators=(", ", ": "))


class JsonFormatter(logging.Formatter):
    """A LogRecord as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            fields["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in fields:
                fields[key] = value
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exception"] = record.exc_text
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return json_line(fields)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` (one of FORMATS)."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {log_format!r}: expected one of {', '.join(FORMATS)}")


def configure(level: str, log_format: str, stream: IO[str]) -> None:
    """The root logger writes `log_format` lines at `level` and above to `stream`, in place
    of whatever handlers it had; warnings.warn goes there too, not as bare stderr text."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def wrap_line(text: str, logger: str, level: str = "info", pid: int | None = None) -> str:
    """A line a child wrote that is not JSON (HAProxy's own notices, a faulthandler dump)
    as a JSON line of `logger`: its level read from a bracketed name near its start,
    HAProxy's `id=` as the request id."""
    found = _BRACKETED_LEVEL.search(text, 0, 64)
    fields: dict[str, Any] = {
        "time": iso_time(datetime.now(UTC).timestamp()),
        "level": _LEVEL_NAMES[found.group(1)] if found else level,
        "logger": logger,
        "message": text,
        "pid": os.getpid() if pid is None else pid,
    }
    request_id = _HAPROXY_REQUEST_ID.search(text)
    if request_id:
        fields["request_id"] = request_id.group(1)
    return json_line(fields)


# The request id at the end of an edge's log line (stack/edge/haproxy.py's log format).
_HAPROXY_REQUEST_ID = re.compile(r" id=([0-9A-Za-z._:-]{1,128})$")


def is_json_object(line: bytes) -> bool:
    """A line that already is a JSON object (one of ours): starts and ends like one."""
    stripped = line.strip()
    return stripped.startswith(b"{") and stripped.endswith(b"}")
