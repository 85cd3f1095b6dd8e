"""The notifier against a real HTTP receiver on loopback, through Apprise's json:// URLs."""

from __future__ import annotations

import logging
import time

import pytest

from cloud_phoenix.notify.channel import RetryPolicy
from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.notify.notifier import Notifier, safe_url_name
from cloud_phoenix.store.base import Event, StoreError, StoreUnavailable
from tests.fixtures.ports import free_port
from tests.fixtures.waiting import eventually
from tests.fixtures.webhook import Receiver

FAST = RetryPolicy(first_delay=0.01, max_delay=0.05, max_attempts=4)
START = Notice("cpu_peak_started", "CPU peak: 97 %", "Host CPU 97.0 %\nserve (pid 1)", {"a": 1})
END = Notice("cpu_peak_ended", "CPU peak ended after 6 s", "highest 99.0 %", {"b": [1, 2]})


def test_notices_reach_the_webhook_in_order_with_their_content(receiver: Receiver) -> None:
    notifier = Notifier([receiver.url()], retry=FAST)
    try:
        notifier.send(START)
        notifier.send(END)
        assert receiver.wait_for(2)
    finally:
        assert notifier.close(5)
    (path1, _, first), (path2, _, second) = receiver.requests
    assert path1 == path2 == "/hooks/phoenix"
    assert (first["title"], first["message"], first["type"]) == (START.title, START.body, "warning")
    assert (second["title"], second["message"], second["type"]) == (END.title, END.body, "info")
    assert (notifier.sent, notifier.failed, notifier.retried, notifier.notices) == (2, 0, 0, 2)


def test_every_notice_is_logged_and_written_to_the_events_sink(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Event] = []
    caplog.set_level(logging.INFO, logger="cloud_phoenix.notify.notifier")
    notifier = Notifier([], events.append, clock=lambda: 1_700_000_000.25)
    notifier.send(START)
    assert notifier.close(5)
    [event] = events
    assert event.kind == "cpu_peak_started" and event.message == START.title
    assert event.data == {"a": 1}
    assert event.time == "2023-11-14T22:13:20.250000Z"
    assert any(
        START.title in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records
    )
    assert notifier.events_written == 1


def test_a_service_answering_500_twice_gets_the_notice_on_the_third_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = Receiver(statuses=(500, 500))
    notifier = Notifier([receiver.url()], retry=FAST)
    try:
        notifier.send(START)
        assert receiver.wait_for(3)
        eventually(lambda: notifier.sent == 1, what="the notice sent")
    finally:
        notifier.close(5)
        receiver.stop()
    assert [status for _, status, _ in receiver.requests] == [500, 500, 200]
    assert [p["title"] for p in receiver.delivered] == [START.title]
    assert (notifier.sent, notifier.retried, notifier.failed) == (1, 2, 0)
    retries = [r for r in caplog.records if "failed (attempt" in r.getMessage()]
    assert len(retries) == 2 and "retrying in" in retries[0].getMessage()


def test_a_dead_service_is_counted_and_logged_and_never_blocks_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"json://127.0.0.1:{free_port()}/hook"  # nobody listens: connection refused
    notifier = Notifier([dead], retry=RetryPolicy(first_delay=0.05, max_attempts=3))
    try:
        slowest = 0.0
        for _ in range(5):
            began = time.perf_counter()
            notifier.send(START)
            slowest = max(slowest, time.perf_counter() - began)
            time.sleep(0.02)  # paced on purpose: the sends overlap failing deliveries
        assert slowest < 0.05
        eventually(lambda: notifier.failed == 5, 20, what="5 notices failed for good")
    finally:
        notifier.close(5)
    assert notifier.sent == 0 and notifier.retried == 10
    gave_up = [r for r in caplog.records if "failed for good after 3 attempt" in r.getMessage()]
    assert len(gave_up) == 5 and all(r.levelno == logging.ERROR for r in gave_up)


def test_a_hanging_service_delays_neither_the_caller_nor_the_other_services() -> None:
    hanging, healthy = Receiver(hold=True), Receiver()
    notifier = Notifier([hanging.url(), healthy.url()], retry=FAST)
    try:
        began = time.perf_counter()
        notifier.send(START)
        notifier.send(END)
        assert time.perf_counter() - began < 0.05
        assert healthy.wait_for(2, timeout=5)  # while the other is still held
        assert hanging.requests == []
        hanging.release.set()
        assert hanging.wait_for(2, timeout=10)
    finally:
        notifier.close(5)
        hanging.stop()
        healthy.stop()
    assert [p["title"] for p in hanging.delivered] == [START.title, END.title]


def test_a_failing_events_store_is_logged_and_the_notice_still_goes_out(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Event] = []

    def broken_store(event: Event) -> None:
        calls.append(event)
        raise StoreUnavailable("database is down")

    notifier = Notifier([receiver.url()], broken_store, retry=FAST)
    try:
        notifier.send(START)
        assert receiver.wait_for(1)
        eventually(lambda: notifier.events_failed == 1, what="the event given up on")
    finally:
        notifier.close(5)
    assert [p["title"] for p in receiver.delivered] == [START.title]
    assert len(calls) == FAST.max_attempts
    assert notifier.sent == 1 and notifier.events_written == 0
    assert any(
        "events store" in r.getMessage() and "database is down" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )


def test_the_events_store_recovering_gets_the_event_on_a_retry() -> None:
    events: list[Event] = []
    failures = [StoreError("locked")]

    def flaky_store(event: Event) -> None:
        if failures:
            raise failures.pop()
        events.append(event)

    notifier = Notifier([], flaky_store, retry=FAST)
    notifier.send(END)
    assert notifier.close(5)
    assert [e.kind for e in events] == ["cpu_peak_ended"]
    assert notifier.events_written == 1 and notifier.events_failed == 0


def test_a_full_queue_drops_the_oldest_notice(caplog: pytest.LogCaptureFixture) -> None:
    hanging = Receiver(hold=True)
    notifier = Notifier([hanging.url()], retry=FAST, queue_size=2)
    try:
        notices = [Notice("cpu_peak_started", f"n{i}", "body") for i in range(5)]
        notifier.send(notices[0])
        eventually(lambda: hanging.arrived == 1, what="n0 held in delivery")
        for notice in notices[1:]:
            notifier.send(notice)
        assert notifier.dropped == 2
        hanging.release.set()
        assert hanging.wait_for(3)
    finally:
        notifier.close(5)
        hanging.stop()
    assert [p["title"] for p in hanging.delivered] == ["n0", "n3", "n4"]
    dropped = [r.getMessage() for r in caplog.records if "dropped the oldest" in r.getMessage()]
    assert len(dropped) == 2 and "'n1'" in dropped[0]


def test_close_gives_up_on_what_it_cannot_deliver_in_time() -> None:
    dead = f"json://127.0.0.1:{free_port()}/hook"
    slow = RetryPolicy(first_delay=30.0, max_attempts=5)
    notifier = Notifier([dead], retry=slow)
    notifier.send(START)
    eventually(lambda: notifier.retried == 1, what="the first retry")
    began = time.monotonic()
    assert notifier.close(0.3) is False
    assert time.monotonic() - began < 2.0
    assert notifier.failed == 1
    notifier.send(END)  # after close: dropped with a log line, never an exception
    assert notifier.dropped == 1


def test_an_invalid_url_is_refused_without_showing_its_credentials(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="URL 2 in PHOENIX_NOTIFY_URLS") as info:
        Notifier([receiver.url(), "bogus://admin:hunter2@alerts.example.com/x"])
    message = str(info.value)
    assert "hunter2" not in message and "admin" not in message
    # A token where the user goes: Apprise's own error line would name it whole.
    with pytest.raises(ValueError, match="URL 1 in PHOENIX_NOTIFY_URLS"):
        Notifier(["bogus://token-hunter2@alerts.example.com/x"])
    assert "hunter2" not in caplog.text
    assert "alerts.example.com" in message and "no 'bogus' service" in message
    with pytest.raises(ValueError, match="incomplete or malformed") as info:
        Notifier(["slack://T1JJ3T3L2/A1BRTD4JD"])
    assert "T1JJ3T3L2" not in str(info.value)
    with pytest.raises(ValueError, match="no scheme"):
        Notifier(["not-a-url-but-a-secret-token"])


def test_channel_names_hide_passwords() -> None:
    notifier = Notifier([f"json://user:s3cret@127.0.0.1:{free_port()}/hook"])
    try:
        [name] = notifier.channel_names
        assert "s3cret" not in name and name.startswith("json://user:")
    finally:
        notifier.close(1)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mailto://user:pass@example.com/?to=ops@example.com", "mailto://***@example.com"),
        ("tgram://123456:ABCDEF/987", "tgram://1...6"),
        ("bogus://u:p@[::1]:99/x", "bogus://***@[::1]:99"),
        ("json://[broken/x", "***"),
        ("just-a-token", "***"),
    ],
)
def test_safe_url_name(url: str, shown: str) -> None:
    assert safe_url_name(url) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#chan",
            "slack://t...2/A...D/T...Q/#...n/",
        ),
        (
            "mailto://user:pass@example.com/?to=ops@example.com",
            "mailto://user:****@example.com/o...m",
        ),
        ("tgram://123456789:ABCDEFGHIJ_abcdefghij/987", "tgram://1...j/9...7/"),
        ("ntfys://topicSecretabc", "ntfys://t...c"),  # the topic is the host and the secret
        (
            "jsons://hooks.example.com:8443/T0/SECRETxyz?-k=QSECRET",
            "jsons://hooks.example.com:8443/T...0/S...z",
        ),
        ("json://localhost:9/SECRETxyz", "json://localhost:9/S...z"),
        ("form://[::1]:8080/SECRETxyz", "form://[::1]:8080/S...z"),
    ],
)
def test_channel_names_are_apprise_s_privacy_form_with_the_path_masked(
    url: str, shown: str
) -> None:
    notifier = Notifier([url])
    try:
        assert notifier.channel_names == [shown]
    finally:
        notifier.close(1)


def test_a_url_whose_password_holds_an_unencoded_at_sign_is_refused() -> None:
    """Apprise would take the password's tail for the host, and print it in its log lines."""
    with pytest.raises(ValueError, match=r"unencoded .@.*%40") as info:
        Notifier(["json://user:a@Q9zzSecret@127.0.0.1/hook"])
    assert "Q9zz" not in str(info.value) and "Secret" not in str(info.value)
    Notifier(["json://user:a%40Q9zzSecret@127.0.0.1/hook"]).close(1)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(10_000) == 60


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"first_delay": -1.0}, {"factor": 0.5}, {"max_age": float("nan")}],
)
def test_a_retry_policy_that_cannot_work_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


SECRETS = ("Pa55wordXyzq", "S3cretTokenXyzq", "QuerySecretXyzq", "HeaderSecretXyzq")


@pytest.mark.parametrize("scheme", ["json", "xml", "form"])
def test_a_failed_delivery_never_logs_the_webhook_secrets(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, Apprise's own debug lines included
    port = free_port()  # nobody listens: every attempt fails
    password, token, query, header = SECRETS
    url = (
        f"{scheme}://hook:{password}@127.0.0.1:{port}/services/T0/B0/{token}"
        f"?-token={query}&+X-Api-Key={header}"
    )
    notifier = Notifier([url], retry=RetryPolicy(first_delay=0.01, max_attempts=2))
    try:
        notifier.send(START)
        eventually(lambda: notifier.failed == 1, what="the notice failed for good")
    finally:
        notifier.close(5)
    text = "\n".join(record.getMessage() for record in caplog.records)
    shown = f"{scheme}://hook:****@127.0.0.1:{port}/s...s/T...0/B...0/S...q"
    assert notifier.channel_names == [shown]
    assert f"to {shown} failed for good" in text
    for secret in SECRETS:  # nor any piece of four characters of it
        assert not [secret[i : i + 4] for i in range(len(secret) - 3) if secret[i : i + 4] in text]
