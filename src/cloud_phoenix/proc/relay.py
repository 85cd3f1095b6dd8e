"""A child's output as JSON lines (PHOENIX_LOG_FORMAT=json): what the child writes as JSON
objects passes as it is, any other line (HAProxy's own lines, a traceback that bypassed
logging, a faulthandler dump) becomes a JSON line of the child's logger, so that the
container's log holds nothing but JSON objects, one a line.

A thread per started child reads its pipe until every process holding the pipe's other end
(the child and whatever it forked) has exited.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from cloud_phoenix.logformat import is_json_object, wrap_line

log = logging.getLogger(__name__)

READ_SIZE = 65536
# A line longer than this (no newline in sight) is passed on in pieces of this size, each
# a line of its own: a child that never ends its line cannot grow the relay without bound.
MAX_LINE = 16384


@dataclass(frozen=True, slots=True)
class Relay:
    """What a child's non-JSON lines are labelled with: the logger name and the level of a
    line that names none itself."""

    logger: str
    level: str = "info"


def relayed(chunk: bytes, relay: Relay, pid: int) -> bytes:
    """The lines of `chunk` as JSON lines; a text line longer than MAX_LINE in pieces."""
    out = bytearray()
    for line in chunk.splitlines():
        if not line.strip():
            continue
        if is_json_object(line):
            out += line.strip() + b"\n"
            continue
        for start in range(0, len(line), MAX_LINE):
            text = line[start : start + MAX_LINE].decode("utf-8", "backslashreplace").rstrip()
            out += wrap_line(text, relay.logger, relay.level, pid).encode() + b"\n"
    return bytes(out)


def start_relay(source: int, sink: int, relay: Relay, pid: int) -> threading.Thread:
    """Copy `source` (the read end of a child's output pipe) to `sink`, line by line, as
    JSON lines; `pid` is the child's. Both descriptors are the relay's: it closes them."""
    thread = threading.Thread(
        target=_pump, args=(source, sink, relay, pid), name=f"relay-{relay.logger}", daemon=True
    )
    thread.start()
    return thread


def _pump(source: int, sink: int, relay: Relay, pid: int) -> None:
    pending = b""
    try:
        while True:
            data = os.read(source, READ_SIZE)
            if not data:
                break
            pending += data
            end = pending.rfind(b"\n") + 1
            if not end and len(pending) >= MAX_LINE:
                end = MAX_LINE
            if end:
                _write_all(sink, relayed(pending[:end], relay, pid))
                pending = pending[end:]
        if pending:
            _write_all(sink, relayed(pending, relay, pid))
    except OSError as exc:  # the sink is gone (a closed stdout): the child must not block
        log.warning("the output of %s cannot be relayed: %s", relay.logger, exc)
        _drain(source)
    finally:
        os.close(source)
        os.close(sink)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _drain(source: int) -> None:
    """Read and drop the rest, so that the child never blocks on a full pipe."""
    try:
        while os.read(source, READ_SIZE):
            pass
    except OSError:
        pass
