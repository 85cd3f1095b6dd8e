"""What one serving process holds: settings, store, journal, key pool and its key maker,
metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fastapi import Request

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.certs.keymaker import KeyMaker
from cloud_phoenix.certs.keys import SpareKey
from cloud_phoenix.certs.pool import KeyPool
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import JournalWriter
from cloud_phoenix.store import LogStore


@dataclass
class Runtime:
    """Built once by `create_app`, started and stopped by the application's lifespan."""

    settings: Settings
    store: LogStore
    journal: JournalWriter
    metrics: Metrics
    pool: KeyPool[SpareKey]
    keymaker: KeyMaker  # makes the pool's keys, in a child process
    started: float = field(default_factory=time.monotonic)


def runtime(request: Request) -> Runtime:
    """The serving process's runtime, for a route."""
    rt: Runtime = request.app.state.runtime
    return rt
