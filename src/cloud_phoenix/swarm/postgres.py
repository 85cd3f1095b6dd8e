"""A PostgreSQL server of its own for `scripts/swarm up` when no database is configured:
Debian's server binaries, a cluster in the state folder, listening on a free loopback port.

PostgreSQL refuses to run as root, so under root the server runs as `nobody`, which owns
its folder. The password is random, made once, and goes only into the URL (a Docker secret).
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from cloud_phoenix import exitcodes
from cloud_phoenix.exitcodes import CannotStart

log = logging.getLogger(__name__)

RUN_AS = "nobody"
USER = "phoenix"
DATABASE = "phoenix"


def find_bindir() -> Path:
    """initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise CannotStart(
            "no database is configured and PostgreSQL's server is not installed: install it "
            "(apt-get install postgresql, or scripts/bootstrap --swarm), or set "
            "DB_CONNECTION_STRING to a PostgreSQL URL",
            exitcodes.UNAVAILABLE,
        )
    return Path(found[-1]).parent


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """One cluster in `folder`: `create()` makes and starts it, `start()` and `stop()` keep
    its data and port, `destroy()` stops it and removes the folder."""

    def __init__(self, folder: Path, port: int = 0, password: str = "") -> None:
        self.folder = folder.absolute()
        self.data = self.folder / "data"
        self.logfile = self.folder / "server.log"
        self.port = port
        self.password = password
        self._as_root = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def create(self) -> None:
        """initdb, loopback-only settings, start, and the `phoenix` database."""
        bindir = find_bindir()
        self.password = secrets.token_hex(16)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder)
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._own(pwfile)
        try:
            self._run(
                bindir / "initdb",
                "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--no-locale",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# cloud-phoenix scripts/swarm: loopback only, socket in this folder\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "max_connections = 200\n"  # a pool in every replica's processes
            )
        for attempt in range(3):
            self.port = free_loopback_port()
            try:
                self.start()
                break
            except CannotStart:
                if attempt == 2:  # the port was taken between the choice and the start
                    raise
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        log.info("PostgreSQL on 127.0.0.1:%d, data in %s", self.port, self.data)

    def start(self) -> None:
        self._run(
            find_bindir() / "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
            "-l", str(self.logfile), "-o", f"-p {self.port}",
        )  # fmt: skip

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def stop(self) -> None:
        """A fast stop (clients disconnected, data kept); an immediate one if that fails."""
        if not self.running():
            return
        pg_ctl = find_bindir() / "pg_ctl"
        try:
            self._run(pg_ctl, "stop", "-w", "-t", "60", "-D", str(self.data), "-m", "fast")
        except CannotStart:
            self._run(pg_ctl, "stop", "-w", "-D", str(self.data), "-m", "immediate")

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _own(self, path: Path) -> None:
        if self._as_root:
            account = pwd.getpwnam(RUN_AS)
            os.chown(path, account.pw_uid, account.pw_gid)
            os.chmod(path, 0o700 if path.is_dir() else 0o600)

    def _run(self, program: Path, *args: str) -> None:
        command = [str(program), *args]
        if self._as_root:
            command = ["runuser", "-u", RUN_AS, "--", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        done = subprocess.run(
            command,
            cwd=self.folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            tail = ""
            if self.logfile.exists():
                tail = "\n".join(self.logfile.read_text(errors="replace").splitlines()[-10:])
            raise CannotStart(
                f"{program.name} {args[0]} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}\n{tail}".strip(),
                exitcodes.UNAVAILABLE,
            )
