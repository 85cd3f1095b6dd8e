"""What a command needs of the host before it starts: a writable home, a free port."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.config import Settings
from cloud_phoenix.exitcodes import CannotStart


def prepare_home(settings: Settings) -> None:
    """Create the state folders and prove they can be written, or refuse to start."""
    folders: tuple[Path, ...] = (
        settings.journal_dir,
        settings.run_dir,
        settings.logs_dir,
        settings.home / "db",
    )
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise CannotStart(
                f"PHOENIX_HOME is not writable ({folder}: {exc.strerror}); set "
                "PHOENIX_HOME to a folder this user can write",
                exitcodes.CANTCREAT,
            ) from None


def listen(
    host: str,
    port: int,
    what: str,
    backlog: int = 4096,
    reuse_port: bool = False,
    listening: bool = True,
) -> socket.socket:
    """A listening socket that children can inherit; a taken port is a clear CannotStart.
    With `reuse_port` (SO_REUSEPORT) it shares the port with other sockets that set it.
    Not `listening`: only bound, for a child that listens on it when it starts (HAProxy)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotStart(
            f"cannot listen on {host}:{port} for the {what}: {exc.strerror}; "
            "is another server using it? Set PORT to a free port",
            exitcodes.TEMPFAIL,
        ) from None
    if listening:
        sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def lock_home(settings: Settings) -> int:
    """Hold PHOENIX_HOME/run/phoenix.lock for the life of the process: two stacks on one home
    would share a journal and a status file. Returns the descriptor (kept open)."""
    path = settings.run_dir / "phoenix.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise CannotStart(
            f"another stack (pid {holder}) already runs with PHOENIX_HOME="
            f"{settings.home}; stop it, or give this one its own PHOENIX_HOME",
            exitcodes.TEMPFAIL,
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
