"""`phoenix backup`, `phoenix backups`, `phoenix restore`: the commands of `backup`.

`register(cli)` adds the three commands to the main Typer application. Errors become a
message on stderr and the error's exit code (cli/edge.py): 65 corrupt or mismatched backup,
66 no such backup, 69 database down or pg_dump missing, 73 folder unwritable or disk full,
75 another backup running, 78 invalid configuration. A failed backup is notified through
PHOENIX_NOTIFY_URLS and every outcome recorded in the store's `events`, as the stack does.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cloud_phoenix import exitcodes
from cloud_phoenix.backup import (
    BackupError,
    CatalogEntry,
    Notify,
    RecordEvent,
    locate,
    restore_backup,
    run_backup,
    scan,
    verify_backup,
)
from cloud_phoenix.backup import Progress as ProgressCallback
from cloud_phoenix.backup.snapshot import backend_name, source_name
from cloud_phoenix.cli.edge import edge, fail, load_settings
from cloud_phoenix.config import Settings
from cloud_phoenix.notify.channel import RetryPolicy
from cloud_phoenix.notify.events import EventLog
from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.notify.notifier import Notifier
from cloud_phoenix.store import StoreError, open_store

log = logging.getLogger(__name__)

# Stages whose counts are bytes (shown as MB); the others count pages, tables or items.
BYTE_STAGES = {"compress", "decompress", "archive", "checksum"}
# A failure notice gets a few tries, and the command waits for them before it exits.
NOTIFY_RETRY = RetryPolicy(first_delay=1.0, max_attempts=3, max_age=10.0)
NOTIFY_WAIT = 15.0


def register(cli: typer.Typer) -> None:
    """Add `backup`, `backups` and `restore` to the `phoenix` command."""
    cli.command("backup")(backup)
    cli.command("backups")(backups)
    cli.command("restore")(restore)


@edge
def backup(
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Then restore it into a scratch database and compare."),
    ] = False,
) -> None:
    """Back up the database, the closed journal days and the server logs now; prune old ones."""
    settings = load_settings()
    with _reports(settings) as (notify, record_event), _progress_bar() as progress:
        result = run_backup(
            settings, verify=verify, notify=notify, record_event=record_event, progress=progress
        )
    manifest = result.manifest
    typer.echo(f"backup {manifest.id} in {settings.backups_dir}")
    typer.echo(
        f"  database   {manifest.records} records, {manifest.events} events, "
        f"{_size(manifest.database.size)} ({manifest.tool})"
    )
    if manifest.archive is not None:
        typer.echo(
            f"  logs       {len(manifest.journal_days)} journal days, "
            f"{len(manifest.server_logs)} server logs, {_size(manifest.archive.size)}"
        )
    if verify:
        typer.echo("  verified   restored into a scratch database: the counts match")
    pruned = result.pruned
    typer.echo(
        f"  pruned     {len(pruned.delete_backups)} backups, "
        f"{len(pruned.delete_journal_days)} journal files "
        f"(keeping {settings.backup_retention_days} days)"
    )


@edge
def backups(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also hash every file (reads them all).")
    ] = False,
) -> None:
    """List the backups: age, size, records, verified, and whether each is good.

    Exits 65 after the list when a manifest names a file that is not its backup's own.
    """
    settings = load_settings()
    entries = scan(settings.backups_dir, deep=check)
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([_as_dict(entry, now) for entry in entries], indent=2))
    else:
        _print_table(settings, entries, now)
    for entry in entries:
        if entry.unsafe:
            typer.secho(f"phoenix: {entry.problem}", err=True, fg=typer.colors.RED)
    if any(entry.unsafe for entry in entries):
        raise typer.Exit(exitcodes.DATAERR)


def _print_table(settings: Settings, entries: list[CatalogEntry], now: datetime) -> None:
    if not entries:
        typer.echo(f"no backups in {settings.backups_dir} (take one: phoenix backup)")
        return
    table = Table(title=f"backups in {settings.backups_dir}", title_justify="left")
    for column in ("backup", "age", "size", "records", "events", "verified", "status"):
        table.add_column(
            column, justify="right" if column in {"size", "records", "events"} else "left"
        )
    for entry in entries:
        manifest = entry.manifest
        table.add_row(
            entry.id,
            _age(now - entry.created_at),
            _size(entry.size),
            str(manifest.records) if manifest else "?",
            str(manifest.events) if manifest else "?",
            _verified(entry, now),
            # A problem may quote a name from a crafted manifest: shown as text, not markup.
            Text("ok", style="green") if entry.good else Text(entry.problem or "", style="red"),
        )
    Console(width=max(120, Console().width)).print(table)


@edge
def restore(
    file: Annotated[str, typer.Argument(help="A backup: any of its files, or its id.")],
    into: Annotated[
        str | None,
        typer.Option(help="Database URL to restore into (default: DB_CONNECTION_STRING)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Replace the configured database without asking.")
    ] = False,
) -> None:
    """Verify a backup, then restore its database. Refuses a damaged file, changing nothing."""
    settings = load_settings()
    target = into or settings.db_url
    manifest_file = locate(file, settings.backups_dir)
    live = _same_database(target, settings.db_url)
    if live and not yes:
        manifest = verify_backup(manifest_file)
        if not sys.stdin.isatty():
            raise fail(
                f"restoring into the configured database ({source_name(target)}) replaces "
                "its records: pass --yes, or restore --into a scratch database first",
                exitcodes.USAGE,
            )
        typer.confirm(
            f"Replace the records of {source_name(target)} with backup {manifest.id} "
            f"({manifest.records} records, taken {manifest.created_at})?",
            abort=True,
        )
    with _progress_bar() as progress:
        result = restore_backup(manifest_file, target, progress)
    manifest = result.manifest
    typer.echo(
        f"restored {manifest.id} into {result.target}: {result.records} records, "
        f"{result.events} events (the backup holds {manifest.records} and {manifest.events})"
    )
    if live:
        typer.echo(
            "the collector now re-reads the journal from the restored positions: records "
            "written since the backup come back from the journal files still on disk"
        )


@contextmanager
def _reports(settings: Settings) -> Iterator[tuple[Notify | None, RecordEvent]]:
    """What a backup reports, as the stack reports it: a failure to every PHOENIX_NOTIFY_URLS
    target (Notifier), each outcome to the store's `events` (EventLog), both best-effort.
    Delivered when the block ends, before the command says how it went."""
    notifier: Notifier | None = None
    try:
        if settings.notify_urls:
            notifier = Notifier(settings.notify_urls, retry=NOTIFY_RETRY)
    except ValueError as exc:  # a backup is worth more than its failure notice: go on
        typer.secho(
            f"phoenix: PHOENIX_NOTIFY_URLS: {exc}; a failure will not be notified",
            err=True,
            fg=typer.colors.YELLOW,
        )
    events = EventLog(None)

    def record(kind: str, message: str, data: dict[str, Any]) -> None:
        if data.get("code") != exitcodes.UNAVAILABLE:  # the database failed: no use waiting
            events.record(kind, message, data)

    try:
        yield (_sender(notifier) if notifier else None), record
    finally:
        if notifier is not None:
            notifier.close(NOTIFY_WAIT)  # what it could not deliver, it has logged
        _store_events(events, settings.db_url)


def _sender(notifier: Notifier) -> Notify:
    def notify(title: str, body: str) -> None:
        # The runner records its own event: the channels only.
        notifier.send(Notice("backup_failed", title, body), record=False)

    return notify


def _store_events(events: EventLog, url: str) -> None:
    """Write the recorded events into the store; a store that does not answer is skipped."""
    if not events.pending:
        return
    try:
        events.store = open_store(url)
    except StoreError as exc:
        log.info("backup event not stored: %s", exc)
        return
    try:
        events.flush()
    finally:
        events.store.close()
    if events.pending:
        log.info("backup event not stored: the store did not take it")


class _Amount(ProgressColumn):
    """Bytes as sizes (12.3/45.6 MB); pages, tables and documents as counts (12/45)."""

    def render(self, task: Task) -> Text:
        if task.fields.get("bytes"):
            return DownloadColumn().render(task)
        total = "?" if task.total is None else str(int(task.total))
        return Text(f"{int(task.completed)}/{total}", style="progress.download")


@contextmanager
def _progress_bar() -> Iterator[ProgressCallback]:
    """A progress bar on stderr when it is a terminal; the callback the library calls."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        _Amount(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total or None, bytes=stage in BYTE_STAGES)
        bar.update(tasks[stage], completed=done, total=total or None)

    with bar:
        yield update


def _same_database(a: str, b: str) -> bool:
    try:
        if backend_name(a) != backend_name(b):
            return False
        if backend_name(a) == "sqlite":
            from cloud_phoenix.backup.sqlite import database_path

            return database_path(a).resolve() == database_path(b).resolve()
        return source_name(a) == source_name(b)
    except BackupError:
        return False


def _as_dict(entry: CatalogEntry, now: datetime) -> dict[str, Any]:
    manifest = entry.manifest
    return {
        "id": entry.id,
        "created_at": entry.created_at.isoformat(),
        "age_s": round((now - entry.created_at).total_seconds()),
        "size": entry.size,
        "records": manifest.records if manifest else None,
        "events": manifest.events if manifest else None,
        "backend": manifest.backend if manifest else None,
        "verified_at": manifest.verified_at if manifest else None,
        "good": entry.good,
        "problem": entry.problem,
        "files": [path.name for path in entry.files],
    }


def _verified(entry: CatalogEntry, now: datetime) -> str:
    manifest = entry.manifest
    if manifest is None or manifest.verified_at is None:
        return "no"
    at = datetime.fromisoformat(manifest.verified_at.replace("Z", "+00:00"))
    return f"yes, {_age(now - at)} ago"


def _age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else f"{seconds} s"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):  # decimal, as the progress bar shows them
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{count} B"  # pragma: no cover - the loop always returns
