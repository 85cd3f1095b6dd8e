"""The HAProxy program: where it is installed, how the stack runs it, and its own check of a
configuration that `haproxy.render` wrote."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

HAPROXY_FALLBACK = "/usr/sbin/haproxy"


class EdgeConfigError(Exception):
    """HAProxy refused a configuration, or could not be run to check it."""


def find_haproxy() -> str | None:
    """The haproxy executable on PATH, else Debian's /usr/sbin/haproxy, else None."""
    return shutil.which("haproxy") or shutil.which(HAPROXY_FALLBACK)


def command_line(haproxy: str, config_path: Path) -> list[str]:
    """How to run the edge: in the foreground (-db), with the edge socket in pass_fds."""
    return [haproxy, "-db", "-f", str(config_path)]


def check_config(
    haproxy: str, path: Path, pass_fds: tuple[int, ...] = (), timeout: float = 30.0
) -> None:
    """Run `haproxy -c -f path`; raise EdgeConfigError with HAProxy's words on failure.

    HAProxy refuses `bind fd@N` unless N is open in the checking process: pass the edge
    socket's descriptor in `pass_fds`.
    """
    try:
        result = subprocess.run(
            [haproxy, "-c", "-f", str(path)],
            pass_fds=pass_fds,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EdgeConfigError(
            f"cannot run {haproxy}: {exc.strerror}; install it: apt-get install haproxy"
        ) from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EdgeConfigError(f"cannot check {path} with {haproxy}: {exc}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise EdgeConfigError(f"HAProxy refused {path} (exit {result.returncode}):\n{output}")
