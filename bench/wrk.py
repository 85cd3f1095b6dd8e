"""Run the `wrk` load generator (Debian package `wrk`) and read its summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

INSTALL_HINT = "install it with: sudo apt-get install -y wrk  (Debian/Ubuntu package `wrk`)"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run: throughput and what went wrong."""

    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int


def ensure_wrk() -> str:
    """The path of `wrk`; installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"wrk is not installed; {INSTALL_HINT}")
    print("wrk is missing: installing the Debian package (apt-get install -y wrk)", flush=True)
    if _apt_get("install", "-y", "wrk"):
        _apt_get("update")
        _apt_get("install", "-y", "wrk")
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError(f"could not install wrk; {INSTALL_HINT}")
    return found


def _apt_get(*args: str) -> int:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(
        ["apt-get", *args], env=env, capture_output=True, timeout=600, check=False
    )
    return done.returncode


def run_wrk(wrk: str, url: str, connections: int, seconds: float, threads: int = 1) -> WrkResult:
    """`wrk -t THREADS -c CONNECTIONS -d SECONDS URL`, bounded by a subprocess timeout."""
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)


def parse(text: str) -> WrkResult:
    """Read the summary wrk prints (`N requests in Xs`, `Requests/sec:`, errors)."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if total is None or rps is None:
        raise RuntimeError(f"cannot read wrk output:\n{text}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * scale,
        rps=float(rps.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )
