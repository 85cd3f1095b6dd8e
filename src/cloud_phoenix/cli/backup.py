"""`phoenix backup`, `phoenix backups`, `phoenix restore`: the edge of `backup`.

`register(cli)` adds the three commands to the main Typer application. Errors become a
message on stderr and the error's exit code: 65 corrupt or mismatched backup, 66 no such
backup, 69 database down or pg_dump missing, 73 folder unwritable or disk full, 75 another
backup running, 78 invalid configuration.
"""

from __future__ import annotations

import json
import logging
import os
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
    DATAERR,
    USAGE,
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
from cloud_phoenix.config import ConfigError, Settings

log = logging.getLogger(__name__)

# Stages whose counts are bytes (shown as MB); the others count pages, tables or items.
BYTE_STAGES = {"compress", "decompress", "archive", "checksum"}


def register(cli: typer.Typer) -> None:
    """Add `backup`, `backups` and `restore` to the `phoenix` command."""
    cli.command("backup")(backup)
    cli.command("backups")(backups)
    cli.command("restore")(restore)


def backup(
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Then restore it into a scratch database and compare."),
    ] = False,
) -> None:
    """Back up the database, the closed journal days and the server logs now; prune old ones."""
    settings = _settings()
    try:
        with _progress_bar() as progress:
            result = run_backup(
                settings,
                verify=verify,
                notify=apprise_notifier(settings.notify_urls),
                record_event=store_events(settings.db_url),
                progress=progress,
            )
    except BackupError as exc:
        raise _fail(str(exc), exc.code) from None
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


def backups(
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Also hash every file (reads them all).")
    ] = False,
) -> None:
    """List the backups: age, size, records, verified, and whether each is good.

    Exits 65 after the list when a manifest names a file that is not its backup's own.
    """
    settings = _settings()
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
        raise typer.Exit(DATAERR)


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
    settings = _settings()
    target = into or settings.db_url
    try:
        manifest_file = locate(file, settings.backups_dir)
        live = _same_database(target, settings.db_url)
        if live and not yes:
            manifest = verify_backup(manifest_file)
            if not sys.stdin.isatty():
                raise _fail(
                    f"restoring into the configured database ({source_name(target)}) replaces "
                    "its records: pass --yes, or restore --into a scratch database first",
                    USAGE,
                )
            typer.confirm(
                f"Replace the records of {source_name(target)} with backup {manifest.id} "
                f"({manifest.records} records, taken {manifest.created_at})?",
                abort=True,
            )
        with _progress_bar() as progress:
            result = restore_backup(manifest_file, target, progress)
    except BackupError as exc:
        raise _fail(str(exc), exc.code) from None
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


def apprise_notifier(urls: tuple[str, ...]) -> Notify | None:
    """Send (title, body) to every PHOENIX_NOTIFY_URLS target; None when there are none."""
    if not urls:
        return None

    def send(title: str, body: str) -> None:
        import apprise

        target = apprise.Apprise()
        for url in urls:
            target.add(url)
        if not target.notify(title=title, body=body):
            log.warning("backup: the failure notification could not be delivered to every URL")

    return send


def store_events(url: str) -> RecordEvent:
    """Record backup events in the store's `events`, best-effort (a down store is skipped)."""

    def record(kind: str, message: str, data: dict[str, Any]) -> None:
        from cloud_phoenix.journal import format_time
        from cloud_phoenix.store import Event, StoreError, open_store

        if data.get("code") == exitcodes.UNAVAILABLE:
            return  # the database is what failed: no point waiting for it again
        try:
            store = open_store(url)
            try:
                store.migrate()
                store.add_event(Event(format_time(datetime.now(UTC)), kind, message, data))
            finally:
                store.close()
        except StoreError as exc:
            log.info("backup event not stored: %s", exc)

    return record


def _settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        raise _fail(f"invalid configuration: {exc}", exitcodes.CONFIG) from None


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(f"phoenix: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


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
