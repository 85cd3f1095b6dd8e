"""The application in-process (ASGI test client) on a real SQLite store in a temporary home,
with a collector child plugged in as `phoenix serve` plugs it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_phoenix.app import Extension, create_app
from cloud_phoenix.app.logroutes import LogRecord
from cloud_phoenix.collector.keeper import CollectorChild
from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import RECORD_FIELDS, RECORD_TYPES, journal_files
from cloud_phoenix.store.base import CURSOR_MAX_LENGTH, CURSOR_PATTERN
from tests.fixtures.waiting import eventually


def make_client(home: Path, collect: bool = False, **env: str) -> TestClient:
    """The application on a SQLite store in `home`; with `collect`, a collector child plugged
    in as `phoenix serve` plugs it (most tests here read the journal, not the store)."""
    settings = Settings.from_env(
        {
            "PHOENIX_HOME": str(home),
            "PHOENIX_ACCESS_LOG": "false",
            "PHOENIX_COLLECT_INTERVAL": "0.05",
            **env,
        }
    )
    extensions = [Extension(lifetime=partial(CollectorChild, settings))] if collect else []
    return TestClient(create_app(settings, extensions=extensions), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def collected(tmp_path: Path) -> Iterator[TestClient]:
    """A client whose application copies its journal into the store, as `phoenix serve` does."""
    with make_client(tmp_path, collect=True) as c:
        yield c


def journal_lines(home: Path) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for name in journal_files(home / "journal"):
        lines += [json.loads(x) for x in (home / "journal" / name).read_text().splitlines()]
    return lines


def wait_collected(client: TestClient, count: int) -> None:
    store = client.app.state.runtime.store  # type: ignore[attr-defined]
    eventually(lambda: store.count() >= count, what=f"{count} records collected")


def test_every_request_is_journaled_once_with_its_fields(
    client: TestClient, tmp_path: Path
) -> None:
    client.get("/health", headers={"X-Request-ID": "abc-123", "User-Agent": "probe/1"})
    client.get("/nope?x=1")
    client.post("/health")
    client.get("/logs?limit=0")
    lines = journal_lines(tmp_path)
    assert [(x["path"], x["status"]) for x in lines] == [
        ("/health", 200),
        ("/nope", 404),
        ("/health", 405),
        ("/logs", 400),
    ]
    first = lines[0]
    assert first["request_id"] == "abc-123" and first["user_agent"] == "probe/1"
    assert lines[1]["query"] == "x=1"
    assert str(first["time"]).endswith("Z") and len(str(first["time"])) == 27
    assert str(first["worker"]).count(":") == 1
    assert all(int(x["bytes"]) > 0 for x in lines)  # type: ignore[call-overload]


@pytest.mark.parametrize("given", ["", "x" * 129, "has space", "tab\there", "ünïcode"])
def test_an_invalid_request_id_is_replaced(client: TestClient, given: str) -> None:
    response = client.get("/health", headers={"X-Request-ID": given.encode()})
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


def test_a_valid_request_id_is_kept(client: TestClient) -> None:
    rid = "A" * 128
    assert client.get("/health", headers={"X-Request-ID": rid}).headers["x-request-id"] == rid


def test_errors_are_json_with_error_and_detail(client: TestClient) -> None:
    for response, status in [
        (client.get("/missing"), 404),
        (client.delete("/logs"), 405),
        (client.get("/logs?limit=5000"), 400),
        (client.get("/generatecert?days=826"), 400),
        (client.get("/generatecert?cn=-bad-"), 400),
        (client.get("/logs?since=yesterday"), 400),
        (client.get("/logs?before=bm9wZQ"), 400),
    ]:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error", "detail"}
        assert "Traceback" not in body["detail"]


def test_generatecert_gives_a_fresh_key_never_written_anywhere(
    client: TestClient, tmp_path: Path
) -> None:
    first = client.get("/generatecert?cn=api.example.org&days=10")
    second = client.get("/generatecert")
    assert first.status_code == second.status_code == 200
    body = first.json()
    assert set(body) == {"key", "cert", "fingerprint_sha256", "not_before", "not_after", "subject"}
    assert body["subject"] == "CN=api.example.org"
    assert body["key"] != second.json()["key"]
    assert first.headers["cache-control"] == "no-store"
    secret = body["key"].splitlines()[5]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_logs_pages_through_every_record_once(collected: TestClient) -> None:
    for n in range(25):
        collected.get(f"/health?n={n}")
    wait_collected(collected, 25)
    seen: list[str] = []
    url = "/logs?limit=7&path=/health"
    while True:
        page = collected.get(url).json()
        seen += [r["query"] for r in page["records"]]
        if page["next"] is None:
            break
        url = f"/logs?limit=7&path=/health&before={page['next']}"
    assert seen == [f"n={n}" for n in reversed(range(25))]


def test_logs_filters_by_status_and_time(collected: TestClient) -> None:
    collected.get("/missing")
    collected.get("/health")
    wait_collected(collected, 2)
    missing = collected.get("/logs?status=404").json()["records"]
    assert [r["path"] for r in missing] == ["/missing"]
    assert collected.get("/logs?since=2999-01-01T00:00:00Z").json()["records"] == []
    assert collected.get("/logs?until=2000-01-01T00:00:00%2B02:00").json()["records"] == []


def test_the_aliases_of_the_node_application_answer(client: TestClient) -> None:
    assert client.get("/querylogs").status_code == 200
    assert client.get("/checkdbConn").json()["backend"] == "sqlite"


def test_checkdb_and_ready_on_a_healthy_store(client: TestClient) -> None:
    body = client.get("/checkdb").json()
    assert body["reachable"] is True and body["round_trip_ms"] >= 0
    assert body["collector"]["bytes"] >= 0
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_a_reused_journal_name_is_in_ready_and_metrics(tmp_path: Path) -> None:
    """The store has read further into a file of this journal's name than the file goes
    (an old task of the same name): /ready is 503 until the collector has moved the file to
    a new name, then names the move; /metrics counts it throughout."""
    with make_client(tmp_path, PHOENIX_INSTANCE="ip-10-40-1-2") as c:
        c.get("/health")
        (name,) = journal_files(tmp_path / "journal")
        store = c.app.state.runtime.store  # type: ignore[attr-defined]
        store.commit_batch(name, 0, 1_000_000, [])  # the old task's position
        waiting = c.get("/ready")
        assert waiting.status_code == 503
        assert any(name in reason for reason in waiting.json()["reasons"])
        assert "phoenix_journal_names_reused 1.0" in c.get("/metrics").text

        assert Collector(store, tmp_path / "journal").collect_once() == 3
        moved = c.get("/ready")
        assert moved.status_code == 200 and moved.json()["reasons"] == []
        (notice,) = moved.json()["notices"]
        assert name in notice and journal_files(tmp_path / "journal")[0] in notice
        text = c.get("/metrics").text
    assert "phoenix_journal_names_reused 1.0" in text
    assert "phoenix_journal_lag_bytes" in text and "phoenix_journal_disk_free_bytes" in text


def test_a_down_store_gives_503_with_the_reason_and_no_password(tmp_path: Path) -> None:
    url = "postgresql://phoenix:s3cret-pass@127.0.0.1:9/phoenix?connect_timeout=1"
    with make_client(tmp_path, DB_CONNECTION_STRING=url) as c:
        check = c.get("/checkdb")
        ready = c.get("/ready")
        logs = c.get("/logs")
        assert client_ok(c.get("/health"))
    assert check.status_code == 503 and check.json()["reachable"] is False
    assert ready.status_code == 503 and ready.json()["reasons"]
    assert logs.status_code == 503 and logs.headers["retry-after"]
    for response in (check, ready, logs):
        assert "s3cret" not in response.text
    # The requests were still journaled: nothing lost while the database is down.
    assert len(journal_lines(tmp_path)) == 4


def client_ok(response: object) -> bool:
    return getattr(response, "status_code", 0) == 200


def test_the_catalogue_lists_every_endpoint_with_security_headers(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    for path in client.get("/openapi.json").json()["paths"]:
        assert f'data-path="{path}"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "http://" not in page.text.replace('href="/', "")  # no CDN, nothing remote
    assert client.get("/static/app.js").status_code == 200


def test_metrics_count_requests_and_certificates(client: TestClient) -> None:
    client.get("/health")
    client.get("/generatecert")
    text = client.get("/metrics").text
    assert 'phoenix_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert "phoenix_certificates_generated_total 1.0" in text
    assert "phoenix_cert_pool_spare_keys" in text
    assert "phoenix_journal_lag_bytes" in text
    assert "phoenix_request_duration_seconds_bucket" in text


def test_cert_render_shows_the_certificate_as_html(client: TestClient) -> None:
    page = client.get("/certRender?cn=example.org")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "-----BEGIN CERTIFICATE-----" in page.text and "CN=example.org" in page.text


def test_the_catalogue_fast_path_is_recorded_like_any_request(
    client: TestClient, tmp_path: Path
) -> None:
    assert client.get("/").status_code == 200
    assert client.post("/").status_code == 405
    assert client.head("/").status_code in {200, 405}
    assert [(x["method"], x["path"]) for x in journal_lines(tmp_path)][:2] == [
        ("GET", "/"),
        ("POST", "/"),
    ]
    text = client.get("/metrics").text
    assert 'phoenix_requests_total{method="GET",route="/",status="200"} 1.0' in text
    client.request("BREW", "/")
    assert 'method="other"' in client.get("/metrics").text  # label set stays bounded


def test_a_saturated_pool_answers_503_and_counts_the_refusal(tmp_path: Path) -> None:
    with make_client(tmp_path, PHOENIX_CERT_POOL="0", PHOENIX_CERT_MAX_WAIT="0.001") as c:
        refused = c.get("/generatecert?cn=busy.example")
        text = c.get("/metrics").text
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
    assert "phoenix_certificates_rejected_total 1.0" in text


def test_an_unexpected_error_is_a_500_with_its_request_id_recorded_once(tmp_path: Path) -> None:
    """The request log is outside the framework: the 500 its error handler makes carries the
    request id the server log names, and is journaled once."""
    with make_client(tmp_path) as client:

        async def broken() -> None:
            raise RuntimeError("a bug")

        client.app.add_api_route("/broken", broken)  # type: ignore[attr-defined]
        response = client.get("/broken", headers={"X-Request-ID": "bug-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "bug-1"
    assert "bug-1" in response.json()["detail"] and "a bug" not in response.text
    assert [r["status"] for r in journal_lines(tmp_path) if r["request_id"] == "bug-1"] == [500]


@pytest.mark.parametrize("path", ["/logs/", "/health/", "/querylogs/?limit=1"])
def test_a_trailing_slash_is_not_found_never_a_redirect_to_the_host_header(
    client: TestClient, path: str
) -> None:
    # Starlette's redirect would say `Location: http://<Host header>/logs`: whoever sends the
    # request would choose where the answer points.
    response = client.get(path, headers={"Host": "attacker.example"}, follow_redirects=False)
    assert response.status_code == 404, response.headers
    assert "location" not in response.headers
    assert "attacker.example" not in response.text
    assert response.json()["error"] == "not found"


def test_the_document_declares_the_cursors_shape(collected: TestClient) -> None:
    # What the document allows for `before`, Cursor.decode accepts (tests/store/test_cursor.py).
    document = collected.get("/openapi.json").json()
    declared = {"type": "string", "pattern": CURSOR_PATTERN, "maxLength": CURSOR_MAX_LENGTH}
    for path in ("/logs", "/querylogs"):
        parameters = document["paths"][path]["get"]["parameters"]
        [before] = [p for p in parameters if p["name"] == "before"]
        assert declared in before["schema"]["anyOf"]
    collected.get("/health")
    wait_collected(collected, 2)
    page = collected.get("/logs", params={"limit": 1}).json()
    assert collected.get("/logs", params={"before": page["next"]}).json()["count"] == 1


def test_a_logs_record_is_the_journal_position_and_the_records_fields() -> None:
    # LogRecord spells its fields out to carry their descriptions; it must stay the record's.
    fields = {name: field.annotation for name, field in LogRecord.model_fields.items()}
    assert fields == {"id": str, **RECORD_TYPES}
    assert list(fields) == ["id", *RECORD_FIELDS]
