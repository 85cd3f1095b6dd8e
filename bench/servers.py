"""Start `phoenix serve` and the bare ceiling app on free loopback ports; always stop them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process under test and where to reach it."""

    name: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(
    name: str, argv: list[str], env: Mapping[str, str], output: Path, timeout: float = 30.0
) -> Server:
    """Run `argv` with PORT set to a free port and wait until `GET /` answers 200."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "PHOENIX_HOST": HOST, **env}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(output, "ab") as sink:
        process = subprocess.Popen(
            argv, env=full_env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name, f"http://{HOST}:{port}", port, process, output)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/", timeout=2.0).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer GET / in {timeout} s:\n{server.log_tail()}")


def start_phoenix(home: Path, env: Mapping[str, str] | None = None) -> Server:
    """`phoenix serve` with journaling and the in-process collector on, access log off."""
    home.mkdir(parents=True, exist_ok=True)
    phoenix_env = {"PHOENIX_HOME": str(home), "PHOENIX_ACCESS_LOG": "false", **(env or {})}
    argv = [sys.executable, "-m", "cloud_phoenix", "serve"]
    return start_server("phoenix", argv, phoenix_env, home / "phoenix-serve.log")


def start_bare(home: Path, page_bytes: int) -> Server:
    """The bare ASGI app (bench/bare_app.py) answering a page of `page_bytes` bytes."""
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(BENCH / "bare_app.py")]
    return start_server("bare", argv, {"BARE_PAGE_BYTES": str(page_bytes)}, home / "bare.log")


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/metrics has no {name}")
    return float(match.group(1))


def wait_quiet(server: Server, spare_target: int, timeout: float = 90.0) -> float:
    """Wait until the key pool is full and the collector has caught up; returns seconds waited.

    Rounds start from the same state, and no background work of one round (key refill,
    collector backlog) runs into the next one's measurement.
    """
    started = time.monotonic()
    spare, lag = 0.0, 0.0
    with httpx.Client(base_url=server.url, timeout=5.0) as client:
        while time.monotonic() - started < timeout:
            text = client.get("/metrics").text
            spare = _gauge(text, "phoenix_cert_pool_spare_keys")
            lag = _gauge(text, "phoenix_journal_lag_bytes")
            if spare >= spare_target and lag < 4096:  # a few lines: the scrapes' own records
                return time.monotonic() - started
            time.sleep(0.2)
    raise RuntimeError(
        f"phoenix did not refill its key pool and catch up in {timeout:g} s: {spare:g} of "
        f"{spare_target} spare keys, collector {lag:g} bytes behind"
    )


def prime_key_pool(server: Server) -> None:
    """Ask for one certificate: a pool that makes spares only once asked then fills up."""
    response = httpx.get(server.url + "/generatecert", timeout=30.0)
    if response.status_code != 200:
        raise RuntimeError(f"GET /generatecert answered {response.status_code}")
