"""PHOENIX_LOG_FORMAT=json: one JSON object a line, with time, level, logger, message and the
request id where there is one, whatever a client put into the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from cloud_phoenix.logformat import (
    REQUEST_ID,
    JsonFormatter,
    configure,
    formatter,
    is_json_object,
    wrap_line,
)

HOSTILE = 'a "quoted" \\ path\n{"level": "critical"}\r\x00\x1b[31m \udcff é \u2028 end'


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON into a buffer; the handlers it had, put back after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure("debug", "json", stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        logging.captureWarnings(False)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    assert text.isascii()  # anything past ASCII is escaped: no encoding can fail it
    return [json.loads(line) for line in text.splitlines()]


def test_a_line_has_time_level_logger_message_and_pid(captured: io.StringIO) -> None:
    logging.getLogger("cloud_phoenix.test").warning("store %s is down", "db1")
    [line] = lines(captured)
    assert line["level"] == "warning"
    assert line["logger"] == "cloud_phoenix.test"
    assert line["message"] == "store db1 is down"
    assert isinstance(line["pid"], int)
    assert isinstance(line["time"], str) and line["time"].endswith("Z")
    datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert "request_id" not in line  # none is being answered


def test_what_a_client_sends_stays_inside_the_one_line(captured: io.StringIO) -> None:
    logging.getLogger("cloud_phoenix.test").error("bad path %s", HOSTILE)
    [line] = lines(captured)  # one object, one line: no newline, quote or brace escaped it
    assert line["message"] == "bad path " + HOSTILE
    assert line["level"] == "error"


def test_the_request_being_answered_names_every_line(captured: io.StringIO) -> None:
    token = REQUEST_ID.set("rid-42")
    try:
        logging.getLogger("cloud_phoenix.test").info("inside")
    finally:
        REQUEST_ID.reset(token)
    logging.getLogger("cloud_phoenix.test").info("outside")
    inside, outside = lines(captured)
    assert inside["request_id"] == "rid-42"
    assert "request_id" not in outside


def test_extra_fields_and_tracebacks_are_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("cloud_phoenix.test")
    log.error("collector: store unavailable", extra={"event": "store_unavailable"})
    try:
        raise ValueError("broken\nvalue")
    except ValueError:
        log.exception("failed")
    unavailable, failed = lines(captured)
    assert unavailable["event"] == "store_unavailable"
    assert isinstance(failed["exception"], str)
    assert "ValueError: broken" in failed["exception"]


def test_warnings_are_log_lines_not_bare_text(captured: io.StringIO) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old call", DeprecationWarning, stacklevel=1)
    [line] = lines(captured)
    assert line["logger"] == "py.warnings"
    assert "an old call" in str(line["message"])


def test_text_stays_the_format_of_a_terminal() -> None:
    record = logging.LogRecord("cloud_phoenix.x", logging.INFO, __file__, 1, "hello", None, None)
    text = formatter("text").format(record)
    assert "INFO cloud_phoenix.x[" in text and text.endswith("]: hello")
    assert isinstance(formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="expected one of text, json"):
        formatter("xml")


def test_a_line_a_child_wrote_as_text_is_wrapped_with_its_level_and_request_id() -> None:
    haproxy = wrap_line(
        "127.0.0.1:5 [04/Dec/2026:18:06:20.069] edge app/app1 0/0/0/1/2 404 537 - - ---- "
        '1/1/0/0/0 0/0 "GET /a%22b HTTP/1.1" id=4b39633592ff4c7aa5803246b980e832',
        "haproxy",
        pid=7,
    )
    line = json.loads(haproxy)
    assert (line["logger"], line["level"], line["pid"]) == ("haproxy", "info", 7)
    assert line["request_id"] == "4b39633592ff4c7aa5803246b980e832"
    notice = json.loads(wrap_line("[WARNING]  (7) : Proxy app stopped", "haproxy"))
    assert notice["level"] == "warning"
    dump = json.loads(wrap_line("Fatal Python error: Segmentation fault", "gunicorn", "error"))
    assert dump["level"] == "error" and "request_id" not in dump
    forged = json.loads(wrap_line(f'GET /x id=a"b {HOSTILE}', "haproxy"))
    assert "request_id" not in forged  # not an id this stack made or accepted


def test_only_a_whole_object_passes_as_it_is() -> None:
    assert is_json_object(b'{"level": "info"}\n')
    assert not is_json_object(b'{"level": "info"} trailing')
    assert not is_json_object(b"Traceback (most recent call last):")
