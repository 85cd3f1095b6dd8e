"""What a command needs of the host before it starts: a writable home, a free port."""

from __future__ import annotations

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
                exitcodes.CANT_CREATE,
            ) from None


def listen(host: str, port: int, what: str, backlog: int = 4096) -> socket.socket:
    """A listening socket that children can inherit; a taken port is a clear CannotStart."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CannotStart(
            f"cannot listen on {host}:{port} for the {what}: {exc.strerror}; "
            "is another server using it? Set PORT to a free port",
            exitcodes.PORT_TAKEN,
        ) from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock
