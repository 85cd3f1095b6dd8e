from __future__ import annotations

import asyncio
import dataclasses
import json
import time

from starlette.types import Message, Receive, Scope, Send

from cloud_phoenix.app.fastlane import ReadyCertificates
from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.certs.keys import READY_MAX_AGE, SpareKey
from cloud_phoenix.certs.pool import KeyPool
from tests.fixtures.certs import new_spare

SPARES = [new_spare() for _ in range(2)]  # made once: RSA keys are slow


def fresh(spare: SpareKey) -> SpareKey:
    """As if just made (collection may be minutes before the test runs)."""
    return dataclasses.replace(spare, made=time.monotonic())


def scope(query: bytes = b"") -> Scope:
    return {
        "type": "http",
        "method": "GET",
        "path": "/generatecert",
        "query_string": query,
        "headers": [],
    }


async def app_reached(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"route"})


def call(lane: ReadyCertificates, s: Scope) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    asyncio.run(lane(s, receive, send))
    return sent


def pool_with(spares: list[SpareKey]) -> KeyPool[SpareKey]:
    made = iter(spares)

    async def make() -> SpareKey:
        return next(made)

    async def filled() -> KeyPool[SpareKey]:
        pool: KeyPool[SpareKey] = KeyPool(0, 1, 5, make=make)
        pool.start()
        for _ in spares:
            pool._spares.append(await pool.take())  # what the pool made ahead
        return pool

    return asyncio.run(filled())


def test_a_fresh_spare_is_answered_in_the_lane_once() -> None:
    metrics = Metrics()
    lane = ReadyCertificates(app_reached, pool_with([fresh(SPARES[0])]), metrics)
    first = call(lane, scope())
    assert first[0]["status"] == 200
    body = json.loads(first[1]["body"])
    assert body["cert"] == SPARES[0].ready.cert and body["key"] == SPARES[0].ready.key
    assert (b"cache-control", b"no-store") in first[0]["headers"]
    second = call(lane, scope())  # the spare was handed out: the route answers now
    assert second[0]["status"] == 299
    assert "phoenix_certificates_generated_total 1.0" in metrics.render().decode()


def test_parameters_or_a_stale_spare_go_to_the_route() -> None:
    stale = dataclasses.replace(SPARES[1], made=SPARES[1].made - READY_MAX_AGE - 1)
    pool = pool_with([stale])
    lane = ReadyCertificates(app_reached, pool, Metrics())
    assert call(lane, scope(b"cn=example.org"))[0]["status"] == 299
    assert call(lane, scope())[0]["status"] == 299
    assert pool.spare_count == 1  # nothing was taken by the lane
