"""`phoenix up` stacks for the benchmark: start one in a temporary home, read its status, its
collector lag and the CPU time of each of its roles; stopped like any other `Server`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from cloud_phoenix.stack.status import StackStatus, read_status
from servers import BENCH, Server, start_server

ROLES = ("edge", "workers", "gunicorn master", "collector", "supervisor")


@dataclass
class Stack:
    """A running `phoenix up` (supervisor, HAProxy, gunicorn and its workers, collector)."""

    server: Server
    home: Path

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def url(self) -> str:
        return self.server.url

    def status(self) -> StackStatus | None:
        """PHOENIX_HOME/run/status.json, which the supervisor rewrites every tick."""
        return read_status(self.home / "run")

    def workers(self) -> tuple[int, int]:
        """(desired, running) worker processes, as the supervisor last saw them."""
        status = self.status()
        return (status.workers.desired, status.workers.running) if status else (0, 0)

    def wait_workers(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.workers() == (count, count):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: not {count} workers in {timeout:g} s: {self.workers()}")

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each role's live processes."""
        used = dict.fromkeys(ROLES, 0.0)
        try:
            supervisor = psutil.Process(self.server.process.pid)
            processes = [supervisor, *supervisor.children(recursive=True)]
        except psutil.Error:
            return used
        status = self.status()
        pids = {name: child.pid for name, child in (status.children if status else {}).items()}
        role_of = {
            pids.get("haproxy"): "edge",
            pids.get("gunicorn"): "gunicorn master",
            pids.get("collector"): "collector",
            supervisor.pid: "supervisor",
        }
        master = pids.get("gunicorn")
        for process in processes:
            try:
                role = role_of.get(process.pid)
                if role is None:
                    role = "workers" if process.ppid() == master else "supervisor"
                times = process.cpu_times()
                used[role] += times.user + times.system
            except psutil.Error:
                continue  # gone since the listing: its time is lost to this sample
        return used

    def wait_collected(self, timeout: float = 120.0) -> float:
        """Poll /checkdb until the collector is within a few lines of the journal's end;
        returns the seconds it took (the granularity is the 0.1 s poll)."""
        started = time.monotonic()
        behind = -1
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while time.monotonic() - started < timeout:
                response = client.get("/checkdb")
                if response.status_code == 200:
                    behind = int(response.json()["collector"]["bytes"])
                    if behind < 4096:  # the polls' own journal lines, not yet collected
                        return time.monotonic() - started
                time.sleep(0.1)
        raise RuntimeError(
            f"{self.name}: collector still {behind} bytes behind after {timeout:g} s"
        )

    def stop(self) -> None:
        self.server.stop(timeout=40.0)

    def log_tail(self) -> str:
        parts = [self.server.log_tail()]
        for name in ("gunicorn.log", "collector.log"):
            path = self.home / "logs" / name
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {name} ---\n" + "\n".join(lines))
        return "\n".join(parts)


def start_stack(name: str, home: Path, workers: int, env: Mapping[str, str]) -> Stack:
    """`phoenix up` on a free loopback port with exactly `workers` workers (min = max: the
    autoscaler cannot change them), the stdout access log off, bench/ on PYTHONPATH."""
    home.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)
    stack_env = {
        "PHOENIX_HOME": str(home),
        "PHOENIX_MIN_WORKERS": str(workers),
        "PHOENIX_MAX_WORKERS": str(workers),
        "PHOENIX_ACCESS_LOG": "false",
        "PHOENIX_GRACEFUL_TIMEOUT": "10",
        "PYTHONPATH": python_path,
        **env,
    }
    argv = [sys.executable, "-m", "cloud_phoenix", "up"]
    stack = Stack(start_server(name, argv, stack_env, home / "phoenix-up.log"), home)
    try:
        stack.wait_workers(workers)
    except RuntimeError:
        stack.stop()
        raise
    return stack
