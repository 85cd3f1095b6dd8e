"""PostgreSQL snapshots with pg_dump (custom format, compressed), restores with pg_restore.

Consistency: a REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot`),
the record counts are read in it, and `pg_dump --snapshot` dumps exactly that state while
the transaction stays open: the manifest's counts are the dump's, to the row.

The password never appears on a command line (`ps` shows those): the tools get a
connection string without it and the password in PGPASSWORD.

A restore first reads the dump's data (`pg_restore --data-only` to a pipe) and counts the
rows of `logs` and `events`; if they differ from the manifest nothing is touched. Then
`pg_restore --clean --if-exists --single-transaction` replaces the tables in one
transaction: it is all there, or (on any error) the target is as it was. The store's
record counter is then counted afresh from the restored records.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import LiteralString
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

from cloud_phoenix import exitcodes
from cloud_phoenix.backup.errors import (
    BackupError,
    BadBackup,
    CannotWrite,
    SourceUnavailable,
)
from cloud_phoenix.backup.files import create_private, fsync_file, temp_path
from cloud_phoenix.backup.manifest import Manifest
from cloud_phoenix.backup.snapshot import Progress, Restored, Snapshot, lines
from cloud_phoenix.store.postgres import create_schema
from cloud_phoenix.store.urls import redact_url, scrub, url_problem, url_secrets

FORMAT = "pg_dump-custom"
INSTALL_HINT = "apt-get install postgresql-client"
_COPY = re.compile(r"^COPY (?:\S+\.)?\"?(logs|events)\"? \(")
_TABLES = ("logs", "events", "journal_positions")


def dump_format(url: str) -> str:
    return FORMAT


def find_tool(name: str) -> str:
    """pg_dump or pg_restore: on PATH, else the newest under /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    raise SourceUnavailable(
        f"{name} is not installed (not on PATH nor under /usr/lib/postgresql/*/bin): {INSTALL_HINT}"
    )


class _Server:
    """A PostgreSQL URL read once: psycopg's connection string, the tools' one, a safe name."""

    def __init__(self, url: str) -> None:
        problem = url_problem(url)
        if problem:
            raise BackupError(f"the PostgreSQL URL is refused: {problem}", exitcodes.USAGE)
        try:
            params = pg_conninfo.conninfo_to_dict(url)
        except (psycopg.ProgrammingError, ValueError):  # ValueError: bytes not UTF-8
            raise BackupError(
                "cannot read the PostgreSQL URL: expected postgresql://user:password@host:port/db",
                exitcodes.USAGE,
            ) from None
        params.setdefault("connect_timeout", 5)
        params.setdefault("application_name", "cloud-phoenix-backup")
        self.url = url
        self.password = str(params.pop("password", "") or "")
        self.tool_conninfo = pg_conninfo.make_conninfo("", **params)
        self.conninfo = pg_conninfo.make_conninfo(
            self.tool_conninfo, password=self.password or None
        )
        self.where = f"PostgreSQL at {redact_url(url)}"
        self.secrets = url_secrets(url)
        self.env = dict(os.environ)
        if self.password:
            self.env["PGPASSWORD"] = self.password

    def connect(self, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(self.conninfo, autocommit=autocommit)
        except psycopg.Error as exc:
            # libpq's message already says what to check (refused, timed out, bad password).
            raise SourceUnavailable(f"{self.where} is unavailable: {self.scrub(exc)}") from None

    def scrub(self, exc: BaseException | str) -> str:
        return scrub(str(exc), self.secrets)


def dump(url: str, final: Path, progress: Progress) -> Snapshot:
    pg_dump = find_tool("pg_dump")
    server = _Server(url)
    target = temp_path(final)
    with server.connect() as conn:
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            snapshot_id = str(row[0]) if row else ""
            records, events, positions = _counts(conn)
            tables = _scalar(
                conn,
                "SELECT count(*) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            )
        except psycopg.Error as exc:
            raise SourceUnavailable(f"{server.where}: {server.scrub(exc)}") from None
        create_private(target)
        done = 0

        def on_line(line: str) -> None:
            nonlocal done
            if "dumping contents of table" in line:
                done += 1
                progress("snapshot", done, tables)

        command = [pg_dump, "--format=custom", "--compress=6", f"--snapshot={snapshot_id}"]
        command += ["--verbose", f"--file={target}", f"--dbname={server.tool_conninfo}"]
        code, tail = _run(command, server, on_line)
        # The snapshot must stay exported until pg_dump has finished: only now end it.
        conn.rollback()
    if code != 0:
        raise _tool_failed("pg_dump", code, tail, server)
    fsync_file(target)
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=False)
    return Snapshot(FORMAT, records, events, positions, version.stdout.strip() or "pg_dump")


def restore(dump: Path, url: str, manifest: Manifest, progress: Progress) -> Restored:
    pg_restore = find_tool("pg_restore")
    server = _Server(url)
    records, events = count_in_dump(dump, pg_restore, server)
    if (records, events) != (manifest.records, manifest.events):
        raise BadBackup(
            f"{dump.name} holds {records} records and {events} events, the manifest says "
            f"{manifest.records} and {manifest.events}: mismatched"
        )
    server.connect().close()  # a clear "unavailable" before pg_restore's own message
    listing = subprocess.run(
        [pg_restore, "--list", str(dump)], capture_output=True, text=True, check=False
    )
    total = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    done = 0

    def on_line(line: str) -> None:
        nonlocal done
        if line.startswith(("pg_restore: creating", "pg_restore: processing data")):
            done = min(done + 1, total)
            progress("restore", done, total)

    command = [pg_restore, "--clean", "--if-exists", "--no-owner", "--no-privileges"]
    command += ["--single-transaction", "--exit-on-error", "--verbose"]
    command += [f"--dbname={server.tool_conninfo}", str(dump)]
    code, tail = _run(command, server, on_line)
    if code != 0:
        raise _tool_failed(
            "pg_restore", code, tail, server, " (one transaction: the target is unchanged)"
        )
    with server.connect() as conn:
        try:
            # The dump's counter, or the target's own if the dump predates it, may disagree
            # with the restored records: count them, under the store's migration lock.
            create_schema(conn, recount=True)
            records, events, _ = _counts(conn)
        except psycopg.Error as exc:
            raise BackupError(f"{server.where}: after the restore: {server.scrub(exc)}") from None
    return Restored(records, events)


def count_in_dump(dump: Path, pg_restore: str, server: _Server) -> tuple[int, int]:
    """Rows of `logs` and `events` in a custom-format dump, read without restoring it."""
    counts = {"logs": 0, "events": 0}
    table: str | None = None
    process = subprocess.Popen(
        [pg_restore, "--data-only", "--file=-", str(dump)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.env,
    )
    assert process.stdout is not None and process.stderr is not None
    for line in lines(process.stdout):
        if table is None:
            match = _COPY.match(line)
            table = match.group(1) if match else None
        elif line == "\\.":
            table = None
        else:
            counts[table] += 1
    error = process.stderr.read().decode(errors="replace")
    if process.wait() != 0:
        raise BadBackup(f"{dump.name} is not a readable pg_dump archive: {server.scrub(error)}")
    return counts["logs"], counts["events"]


@contextmanager
def scratch(url: str, folder: Path) -> Iterator[str]:
    """An empty database on the source's server, dropped afterwards."""
    server = _Server(url)
    name = f"phoenix_verify_{secrets.token_hex(4)}"
    with server.connect(autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise CannotWrite(
                f"cannot create a scratch database on {server.where} to verify the backup: "
                f"{server.scrub(exc)}; grant this user CREATEDB, or check a backup with "
                "`phoenix restore FILE --into postgresql://.../scratch`"
            ) from None
    parts = urlsplit(url)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with server.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _scalar(conn: psycopg.Connection[tuple[object, ...]], query: LiteralString) -> int:
    row = conn.execute(query).fetchone()
    return int(str(row[0])) if row else 0


def _counts(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int, dict[str, int]]:
    row = conn.execute(
        "SELECT to_regclass('logs') IS NOT NULL, to_regclass('events') IS NOT NULL, "
        "to_regclass('journal_positions') IS NOT NULL"
    ).fetchone()
    has_logs, has_events, has_positions = row if row else (False, False, False)
    records = _scalar(conn, "SELECT count(*) FROM logs") if has_logs else 0
    events = _scalar(conn, "SELECT count(*) FROM events") if has_events else 0
    positions: dict[str, int] = {}
    if has_positions:
        rows = conn.execute('SELECT file, "offset" FROM journal_positions').fetchall()
        positions = {str(file): int(str(offset)) for file, offset in rows}
    return records, events, positions


def _run(
    command: list[str], server: _Server, on_line: Callable[[str], None]
) -> tuple[int, list[str]]:
    """Run a tool, feeding its stderr to `on_line`; returns its exit code and last lines."""
    tail: list[str] = []
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server.env,
    )
    assert process.stderr is not None
    for line in lines(process.stderr):
        on_line(line)
        tail = [*tail[-19:], line]
    return process.wait(), tail


def _tool_failed(
    tool: str, code: int, tail: list[str], server: _Server, note: str = ""
) -> BackupError:
    errors = [line for line in tail if "error" in line.lower() or "fatal" in line.lower()]
    detail = server.scrub("; ".join(errors[-3:] or tail[-3:]))
    if "No space left" in detail or "Disk quota" in detail:
        return CannotWrite(
            f"{tool} cannot write: {detail}; free some space. Earlier backups are intact"
        )
    if "connection to server" in detail or "could not connect" in detail:
        return SourceUnavailable(f"{server.where} is unavailable: {detail}")
    if "version mismatch" in detail:
        return SourceUnavailable(f"{tool} is older than the server: {detail}; {INSTALL_HINT}")
    return BackupError(f"{tool} failed (exit {code}){note}: {detail}")
