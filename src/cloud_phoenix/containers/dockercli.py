"""The docker command line bound to one engine, and long commands whose output is progress."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloud_phoenix import exitcodes

log = logging.getLogger(__name__)

# Where a line of a long command's output goes as it comes (a terminal, a log file).
Sink = Callable[[str], None]

# Debian's docker.io puts its CLI here; the one first on PATH may be another without buildx.
DEBIAN_CLI = "/usr/bin/docker"
# From 23.0 on, `docker build` is buildx; before, DOCKER_BUILDKIT=1 uses the CLI's own client.
_BUILDX_DEFAULT_MAJOR = 23
_TAIL_LINES = 40


class ContainerError(Exception):
    """Docker cannot do what was asked; `code` is the exit code, the message says what to do."""

    def __init__(self, message: str, code: int = exitcodes.SOFTWARE) -> None:
        super().__init__(message)
        self.code = code


def find_cli(candidates: Sequence[str] | None = None) -> str:
    """A docker CLI that builds with BuildKit: one with the buildx plugin, or one older than
    23.0 (Debian's docker.io), whose own BuildKit client DOCKER_BUILDKIT=1 turns on."""
    found = candidates if candidates is not None else (shutil.which("docker"), DEBIAN_CLI)
    paths = list(dict.fromkeys(p for p in found if p and os.access(p, os.X_OK)))
    for path in paths:
        if _quiet([path, "buildx", "version"]) is not None:
            return path
    for path in paths:
        version = _quiet([path, "--version"]) or ""  # "Docker version 20.10.24+dfsg1, build ..."
        major = re.search(r"version (\d+)\.", version)
        if major and int(major.group(1)) < _BUILDX_DEFAULT_MAJOR:
            return path
    raise ContainerError(
        "no docker command line that can build with BuildKit "
        f"(looked at: {', '.join(paths) or 'none on PATH'}): install Debian's docker.io "
        "(scripts/bootstrap --docker) or the docker-buildx plugin",
        exitcodes.UNAVAILABLE,
    )


def _quiet(command: list[str]) -> str | None:
    """stdout of a quick command that needs no engine, or None if it failed."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def run_logged(
    command: Sequence[str],
    what: str,
    *,
    env: Mapping[str, str] | None = None,
    sink: Sink | None = None,
    timeout: float = 1800.0,
    cwd: Path | None = None,
) -> float:
    """Run a long `command`, passing each output line to `sink`; returns its seconds.

    A failure raises ContainerError with `what` and the last lines of the output, so that a
    quiet caller (no sink) still shows why.
    """
    log.info("%s: %s", what, " ".join(command[:3]))
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    except OSError as exc:
        message = f"{what}: cannot run {command[0]}: {exc}"
        raise ContainerError(message, exitcodes.UNAVAILABLE) from None
    assert process.stdout is not None
    # A command that hangs without a word is ended too, not only one that keeps talking.
    deadline = threading.Timer(timeout, process.kill)
    deadline.start()
    try:
        with process:
            for line in process.stdout:
                tail.append(line.rstrip("\n"))
                if sink is not None:
                    sink(line.rstrip("\n"))
            code = process.wait()
    finally:
        deadline.cancel()
    seconds = time.monotonic() - started
    if seconds >= timeout:
        raise ContainerError(f"{what}: no end after {timeout:.0f} s, stopped")
    if code != 0:
        shown = "\n".join(tail)
        raise ContainerError(f"{what} failed (exit {code}) after {seconds:.0f} s:\n{shown}")
    log.info("%s: done in %.1f s", what, seconds)
    return seconds


@dataclass(frozen=True)
class DockerCli:
    """`docker` against one engine: `host` is its DOCKER_HOST (None: the machine's own)."""

    binary: str
    host: str | None = None
    config_dir: Path | None = None  # DOCKER_CONFIG: a private engine's own, no user contexts
    env: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in {"DOCKER_CONTEXT", "DOCKER_HOST"}}
        env["DOCKER_BUILDKIT"] = "1"
        if self.host is not None:
            env["DOCKER_HOST"] = self.host
        elif "DOCKER_HOST" in os.environ:
            env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        if self.config_dir is not None:
            env["DOCKER_CONFIG"] = str(self.config_dir)
        object.__setattr__(self, "env", env)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` with its output captured; ContainerError if it fails and `check`."""
        try:
            done = subprocess.run(
                [self.binary, *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            message = f"docker {' '.join(args[:3])}: no answer in {timeout:.0f} s"
            raise ContainerError(message) from None
        if check and done.returncode != 0:
            raise ContainerError(
                f"docker {' '.join(args[:3])} failed (exit {done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def stream(
        self, *args: str, what: str, sink: Sink | None = None, timeout: float = 1800.0
    ) -> float:
        """`docker ARGS` with its output going to `sink` line by line; returns its seconds."""
        return run_logged([self.binary, *args], what, env=self.env, sink=sink, timeout=timeout)

    def has_image(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        """The image's size in bytes, all its layers together (as `docker images` shows)."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout)
