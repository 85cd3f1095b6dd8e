"""The relay between a child and the stack's output (PHOENIX_LOG_FORMAT=json): a real child
writes JSON, text, a never-ending line and a last line without a newline; what comes out is
JSON objects only, one a line, in order."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cloud_phoenix.proc.child import Child, ChildSpec
from cloud_phoenix.proc.relay import MAX_LINE, Relay, relayed
from tests.fixtures.waiting import eventually

CHILD = r"""
import sys
sys.stdout.write('{"level": "info", "logger": "app", "message": "as it is"}\n')
sys.stdout.flush()
sys.stderr.write("Traceback (most recent call last):\n  boom\n")
sys.stderr.flush()
sys.stdout.write("x" * LONG + "\n")
sys.stdout.write("[WARNING] no newline at the end")
"""


def test_json_lines_pass_and_other_lines_are_wrapped() -> None:
    out = relayed(b'{"a": 1}\nplain text "quoted"\n\n[ERROR] failed\n', Relay("haproxy"), 9)
    first, second, third = (json.loads(line) for line in out.decode().splitlines())
    assert first == {"a": 1}
    assert (second["message"], second["logger"], second["level"]) == (
        'plain text "quoted"',
        "haproxy",
        "info",
    )
    assert third["level"] == "error"


def test_a_childs_output_reaches_the_log_file_as_json_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child(
        ChildSpec(
            "talker",
            [sys.executable, "-c", CHILD.replace("LONG", str(MAX_LINE * 2 + 10))],
            dict(os.environ),
            log_path=log,
            relay=Relay("talker", "error"),
        )
    )
    child.start(time.monotonic())
    assert child.process is not None
    assert child.process.wait(10) == 0

    def relayed_all() -> list[dict[str, object]] | None:
        objects = [json.loads(line) for line in log.read_text().splitlines()]
        last = objects[-1].get("message") if objects else None
        return objects if last == "[WARNING] no newline at the end" else None

    objects = eventually(
        relayed_all, 10, what="the relay to copy the last line", ignore=(json.JSONDecodeError,)
    )
    assert objects[0] == {"level": "info", "logger": "app", "message": "as it is"}
    assert objects[1]["message"] == "Traceback (most recent call last):"
    assert objects[1]["level"] == "error"  # what bypasses logging in a Python child
    assert objects[2]["message"] == "  boom"
    pieces = [o["message"] for o in objects[3:-1]]
    assert "".join(map(str, pieces)) == "x" * (MAX_LINE * 2 + 10)
    assert all(len(str(piece)) <= MAX_LINE for piece in pieces)
    assert objects[-1]["level"] == "warning"


# On SIGTERM it fills a 1 MiB pipe (the most Linux gives without privileges) and exits at
# once: thousands of lines are still in the pipe when its exit is reaped.
STOPPING = r"""
import fcntl, signal, sys, time
fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ
def stop(*_):
    for n in range(9000):
        sys.stdout.write(f"stopping line {n} " + "y" * 80 + "\n")
    sys.stdout.write("last words\n")
    sys.stdout.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_stop_returns_once_the_childs_last_lines_are_relayed(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    child = Child(
        ChildSpec(
            "stopper",
            [sys.executable, "-c", STOPPING],
            dict(os.environ),
            log_path=log,
            relay=Relay("stopper"),
        )
    )
    child.start(time.monotonic())
    eventually(lambda: "ready" in log.read_text(), 10, what="the child's first line")
    assert child.stop(10) == 0
    # No waiting here: what the child wrote on its way out is in the file when stop returns.
    lines = log.read_text().splitlines()
    assert json.loads(lines[-1])["message"] == "last words"
    assert len(lines) == 9002
