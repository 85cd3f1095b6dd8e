"""A private Docker Engine in one folder, started on demand and removed with all it made.

`dockerd` runs with its own data root, exec root, pidfile, unix socket, daemon.json,
containerd namespace and cgroup parent, all named after the folder, so it shares nothing
with the machine's own Docker nor with another private engine. It makes no network of its
own: no bridge, no iptables rules. Containers use `--network host`, each server on a
loopback address of its own (127.0.1.N).

`stop()` removes everything: the containers, the swarm state, the networks and volumes,
then the daemon, whatever it left running (containerd, shims, container processes), its
mounts and the folder. It works from what is on disk (the pidfile, the cgroup), so it also
mends a folder whose daemon died, or whose owner was killed before it could call stop().
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import ContainerError, DockerCli, find_cli
from cloud_phoenix.containers.leftovers import (
    kill_cgroup,
    kill_mentioning,
    terminate,
    unmount_below,
)

log = logging.getLogger(__name__)

# A unix socket's path is at most 107 bytes; containerd's ttrpc socket is the deepest.
_SOCKET_PATH_MAX = 107
_DEEPEST_SOCKET = "exec/containerd/containerd.sock.ttrpc"
MARKER = ".phoenix-engine"  # stop() removes only a folder that start() made its own
# Where the engine takes a network's addresses, should anything make one (swarm init makes
# docker_gwbridge): loopback, never a private range that a host's own network may use.
ADDRESS_POOL = "127.78.0.0/16"
ADDRESS_POOL_SIZE = 24


@dataclass(frozen=True)
class EnginePaths:
    """Where one private engine keeps everything, under `folder`."""

    folder: Path

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def host(self) -> str:
        """The engine's DOCKER_HOST."""
        return f"unix://{self.socket}"

    @property
    def data_root(self) -> Path:
        return self.folder / "data"

    @property
    def exec_root(self) -> Path:
        return self.folder / "exec"

    @property
    def pidfile(self) -> Path:
        return self.folder / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.folder / "dockerd.log"

    @property
    def name(self) -> str:
        """A name unique to the folder, for the containerd namespace and the cgroup parent."""
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:12]
        return f"phoenix-engine-{digest}"


def daemon_config() -> dict[str, object]:
    """daemon.json: only the address pools (the rest is on the command line)."""
    return {"default-address-pools": [{"base": ADDRESS_POOL, "size": ADDRESS_POOL_SIZE}]}


def dockerd_command(dockerd: str, paths: EnginePaths) -> list[str]:
    """The daemon's command line: everything in the folder, no network of its own."""
    return [
        dockerd,
        f"--config-file={paths.folder / 'daemon.json'}",  # not the machine's /etc/docker one
        f"--data-root={paths.data_root}",
        f"--exec-root={paths.exec_root}",
        f"--pidfile={paths.pidfile}",
        f"--host={paths.host}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--containerd-namespace={paths.name}",
        f"--containerd-plugins-namespace={paths.name}-plugins",
        "--exec-opt=native.cgroupdriver=cgroupfs",
        f"--cgroup-parent=/{paths.name}",
    ]


class PrivateEngine:
    """One dockerd of our own in `folder`; a context manager that starts and always stops it."""

    def __init__(self, folder: Path, cli: str | None = None) -> None:
        self.paths = EnginePaths(folder.absolute())
        self._cli = cli

    def docker(self) -> DockerCli:
        """The docker command line bound to this engine (a CLI that can build, see find_cli)."""
        if self._cli is None:
            self._cli = find_cli()
        return DockerCli(self._cli, self.paths.host, self.paths.folder / "client")

    def __enter__(self) -> PrivateEngine:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start dockerd and wait until it answers; ContainerError (and nothing left) if not."""
        paths = self.paths
        dockerd = _find_dockerd()
        if os.geteuid() != 0:
            raise ContainerError(
                "a private Docker Engine needs root (dockerd mounts and makes cgroups): run "
                "as root, or use the machine's Docker",
                exitcodes.UNAVAILABLE,
            )
        deepest = paths.folder / _DEEPEST_SOCKET
        if len(str(deepest)) > _SOCKET_PATH_MAX:
            raise ContainerError(
                f"the engine folder {paths.folder} is too deep: {deepest} would be longer "
                f"than a unix socket's {_SOCKET_PATH_MAX} bytes; use a shorter path "
                "(e.g. under /tmp)",
                exitcodes.CONFIG,
            )
        if paths.folder.exists() and any(paths.folder.iterdir()):
            if not (paths.folder / MARKER).exists():
                raise ContainerError(
                    f"{paths.folder} is not empty and not a private engine's folder: give "
                    "an empty or new folder",
                    exitcodes.CANTCREAT,
                )
            self.stop()  # what an earlier run left there
        try:
            paths.folder.mkdir(parents=True, exist_ok=True)
            (paths.folder / MARKER).write_text("")
            (paths.folder / "daemon.json").write_text(json.dumps(daemon_config(), indent=2) + "\n")
        except OSError as exc:
            raise ContainerError(
                f"cannot make the engine folder {paths.folder}: {exc}", exitcodes.CANTCREAT
            ) from None
        with open(paths.log, "ab") as output:
            process = subprocess.Popen(
                dockerd_command(dockerd, paths),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_daemon_env(),
                start_new_session=True,  # a Ctrl-C in the caller's terminal is not for it
            )
        deadline = time.monotonic() + timeout
        while not ping(paths.socket):
            if process.poll() is not None or time.monotonic() > deadline:
                why = (
                    f"exited with {process.returncode}"
                    if process.poll() is not None
                    else f"did not answer within {timeout:.0f} s"
                )
                tail = self.log_tail()
                self.stop()
                raise ContainerError(f"dockerd {why}; its log:\n{tail}", exitcodes.UNAVAILABLE)
            time.sleep(0.1)
        log.info("private Docker Engine up at %s (pid %d)", paths.host, process.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """Remove everything this engine made, the folder last. Safe to call again."""
        paths = self.paths
        if not paths.folder.exists():
            return
        if not (paths.folder / MARKER).exists():
            raise ContainerError(
                f"{paths.folder} is not a private engine's folder: not removing it",
                exitcodes.CANTCREAT,
            )
        pid = dockerd_pid(paths)
        if pid is not None and ping(paths.socket):
            self._empty()
        if pid is not None:
            terminate(pid, timeout)
        kill_cgroup(paths.name)  # container processes, if the daemon could not stop them
        kill_mentioning(paths.folder)  # containerd and its shims
        unmount_below(paths.folder)
        # rm, not shutil.rmtree: it never goes into a file system mounted below (a mount
        # that would not go away), and it is about twice as fast on an image's many files.
        removed = subprocess.run(
            ["rm", "-rf", "--one-file-system", str(paths.folder)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if paths.folder.exists():
            raise ContainerError(
                f"could not remove {paths.folder}: {removed.stderr.strip()}", exitcodes.SOFTWARE
            )
        log.info("private Docker Engine at %s removed", paths.folder)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.paths.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _empty(self) -> None:
        """Through the API: swarm state, containers (with their anonymous volumes), networks
        (swarm's docker_gwbridge is a host interface) and volumes. Best effort: what fails
        here is still removed with the folder."""
        docker = self.docker()
        state = docker.run("info", "--format", "{{.Swarm.LocalNodeState}}", check=False)
        if state.stdout.strip() not in {"", "inactive"}:
            docker.run("swarm", "leave", "--force", check=False, timeout=60)
        containers = docker.run("ps", "--all", "--quiet", check=False).stdout.split()
        if containers:
            docker.run("rm", "--force", "--volumes", *containers, check=False, timeout=120)
        docker.run("network", "prune", "--force", check=False)
        volumes = docker.run("volume", "ls", "--quiet", check=False).stdout.split()
        if volumes:
            docker.run("volume", "rm", "--force", *volumes, check=False)


def ping(socket_path: Path, timeout: float = 2.0) -> bool:
    """Whether the engine on `socket_path` answers its API's /_ping."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
    except OSError:
        return False
    status = answer.split(b"\r\n", 1)[0].split()
    return len(status) >= 2 and status[1] == b"200"


def dockerd_pid(paths: EnginePaths) -> int | None:
    """The pid of this folder's dockerd if it runs (the pidfile's, checked against its
    command line, so that a pid reused by another process is never signalled)."""
    try:
        pid = int(paths.pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    mine = f"--exec-root={paths.exec_root}".encode()
    return pid if mine in cmdline else None


def _find_dockerd() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    found = shutil.which("dockerd", path=path)
    if found is None:
        raise ContainerError(
            "dockerd is not installed: install Debian's docker.io (scripts/bootstrap --docker)",
            exitcodes.UNAVAILABLE,
        )
    return found


def _daemon_env() -> dict[str, str]:
    """The caller's environment, with the sbin folders where containerd and runc live."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    folders = env.get("PATH", "").split(os.pathsep)
    extra = [f for f in ("/usr/local/sbin", "/usr/sbin", "/sbin") if f not in folders]
    env["PATH"] = os.pathsep.join([*folders, *extra]).strip(os.pathsep)
    return env


def engine_env(paths: EnginePaths) -> dict[str, str]:
    """What a shell needs to use the engine: DOCKER_HOST, and BuildKit on for an old CLI."""
    return {"DOCKER_HOST": paths.host, "DOCKER_BUILDKIT": "1"}
