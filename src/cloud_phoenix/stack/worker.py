"""The gunicorn worker class of `phoenix up`: uvicorn with uvloop and httptools."""

from __future__ import annotations

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class PhoenixWorker(UvicornWorker):  # type: ignore[misc]
    """As `phoenix serve` runs the app: uvloop, httptools, no `server: uvicorn` header."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        "http": "httptools",
        "server_header": False,
    }
