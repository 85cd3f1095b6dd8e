"""The edge's numbers, read from HAProxy's admin socket (a Unix socket, mode 0600)."""

from __future__ import annotations

import csv
import socket
import time
from pathlib import Path

from cloud_phoenix.stack.edge.haproxy import BACKEND, FRONTEND

STATS_SOCKET = "haproxy.sock"  # the edge's admin socket, in PHOENIX_HOME/run


class EdgeStatsError(Exception):
    """The edge's admin socket is missing, refused the connection or did not answer."""


class EdgeStats:
    """Reads the edge's admin socket: the request rate, the frontend and server rows."""

    def __init__(self, socket_path: Path, timeout: float = 1.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def ask(self, command: str) -> str:
        """Send one command (e.g. "show info") and return the whole answer."""
        if any(c in command for c in "\n;"):  # either would chain further commands
            raise ValueError(f"one admin command at a time, not {command!r}")
        deadline = time.monotonic() + self.timeout
        chunks: list[bytes] = []
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(command.encode("ascii") + b"\n")
                # Without "prompt", HAProxy answers one command and closes: read to EOF,
                # within one overall deadline.
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
                    sock.settimeout(max(deadline - time.monotonic(), 1e-3))
        except FileNotFoundError as exc:
            raise EdgeStatsError(
                f"no HAProxy admin socket at {self.socket_path}: is the edge running?"
            ) from exc
        except ConnectionRefusedError as exc:
            raise EdgeStatsError(
                f"nothing listens on {self.socket_path}: the edge stopped"
            ) from exc
        except TimeoutError as exc:
            raise EdgeStatsError(
                f"HAProxy did not answer {command!r} on {self.socket_path} "
                f"within {self.timeout:g} s"
            ) from exc
        except OSError as exc:
            raise EdgeStatsError(f"cannot read {self.socket_path}: {exc}") from exc
        answer = b"".join(chunks).decode("utf-8", "replace")
        if not answer.strip():
            raise EdgeStatsError(f"HAProxy gave an empty answer to {command!r}")
        return answer

    def info(self) -> dict[str, str]:
        """`show info`: figures of the process (Version, Pid, Uptime_sec, CurrConns...)."""
        pairs = (line.partition(":") for line in self.ask("show info").splitlines())
        return {name.strip(): value.strip() for name, sep, value in pairs if sep}

    def rows(self) -> list[dict[str, str]]:
        """`show stat`: one row per frontend, backend and server, keyed by CSV column."""
        return parse_stat(self.ask("show stat"))

    def frontend(self) -> dict[str, str]:
        """The row of the `edge` frontend (req_rate, req_tot, scur, hrsp_5xx...)."""
        for row in self.rows():
            if row.get("pxname") == FRONTEND and row.get("svname") == "FRONTEND":
                return row
        raise EdgeStatsError(f"HAProxy has no frontend {FRONTEND!r}: is this Phoenix's edge?")

    def servers(self) -> list[dict[str, str]]:
        """The rows of the app backend's servers (status, check_status, qcur, scur...)."""
        return [
            row
            for row in self.rows()
            if row.get("pxname") == BACKEND and row.get("svname") not in ("FRONTEND", "BACKEND")
        ]

    def dropped_logs(self) -> int:
        """Log lines this HAProxy could not write since it started (`show info` DroppedLogs):
        it writes its log to a descriptor without blocking, and drops a line that finds the
        descriptor full (the relay behind it too slow, on a busy machine)."""
        value = self.info().get("DroppedLogs")
        if value is None or not value.isdigit():
            raise EdgeStatsError(f"`show info` has no DroppedLogs count: {value!r}")
        return int(value)

    def request_rate(self) -> float:
        """HTTP requests per second at the edge, over the last second."""
        value = self.frontend().get("req_rate", "")
        try:
            return float(value or 0)
        except ValueError as exc:
            raise EdgeStatsError(f"req_rate is not a number: {value!r}") from exc


def parse_stat(text: str) -> list[dict[str, str]]:
    """Rows of `show stat` CSV, whose header line is "# pxname,svname,...,"."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise EdgeStatsError(f"`show stat` answered without its CSV header: {text[:200]!r}")
    names = next(csv.reader([lines[0][2:]]))
    return [
        {name: value for name, value in zip(names, values, strict=False) if name}
        for values in csv.reader(lines[1:])
    ]


class LifetimeTotal:
    """The total of a counter that starts again at 0 when its process restarts (HAProxy's
    DroppedLogs, after a crash or a deploy): what each sample adds to the sum of its lives.
    A restart between two samples loses what the new process counted before the sample
    that first shows it smaller, at most a sample interval's worth."""

    def __init__(self) -> None:
        self.total = 0
        self._last = 0

    def update(self, current: int) -> int:
        """Take a sample of the counter; returns what it adds to `total`."""
        added = current - self._last if current >= self._last else current  # a new process
        self._last = current
        self.total += added
        return added
