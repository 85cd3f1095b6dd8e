"""Backups against real databases: round trips, refusals, a full disk, a database down,
ten simulated days of rotation, and the `backup`/`backups`/`restore` commands.

SQLite files live in tmp_path; PostgreSQL is the session's real server (a fresh database
per test); MongoDB runs only where PHOENIX_TEST_MONGODB_URL is set. The clock is injected:
a "day" is a backup taken with the next day's date, not a day of waiting.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import secrets
import subprocess
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cloud_phoenix import exitcodes
from cloud_phoenix.backup import (
    BackupResult,
    BadBackup,
    CannotWrite,
    SourceUnavailable,
    locate,
    restore_backup,
    run_backup,
    scan,
    verify_backup,
)
from cloud_phoenix.backup import manifest as manifest_module
from cloud_phoenix.backup import runner as runner_module
from cloud_phoenix.cli.backup import register
from cloud_phoenix.collector.loop import Collector
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import (
    AccessRecord,
    JournalEntry,
    JournalWriter,
    format_time,
    position_key,
)
from cloud_phoenix.store import Event, LogQuery, LogRow, open_store
from tests.fixtures.ports import free_port
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.stores import MONGO_ENV, MONGO_SKIP, drop_mongo_database, fresh_mongo_url

pytestmark = pytest.mark.integration

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
Contents = tuple[list[LogRow], list[Any], dict[str, int]]


# -- helpers -------------------------------------------------------------------------------


def settings_for(home: Path, db_url: str | None = None) -> Settings:
    env = {"PHOENIX_HOME": str(home)}
    if db_url:
        env["DB_CONNECTION_STRING"] = db_url
    return Settings.from_env(env)


def record(n: int, when: datetime, noise: str = "") -> AccessRecord:
    return AccessRecord(
        format_time(when), "GET", f"/p/{n % 7}", f"n={n}", 200 + n % 3, n, 1.5 * n,
        "127.0.0.1", f"agent{noise}", "", "host:1", f"req-{n}",
    )  # fmt: skip


def serve(settings: Settings, day: datetime, count: int, start: int = 0, noise: int = 0) -> None:
    """`count` requests on `day` into the journal, collected into the store, and one event."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    writer = JournalWriter(settings.journal_dir, clock=day.timestamp)
    for n in range(start, start + count):
        writer.append(record(n, day + timedelta(milliseconds=n), secrets.token_hex(noise)))
    writer.close()
    store = open_store(settings.db_url)
    try:
        Collector(store, settings.journal_dir).collect_once()
        store.add_event(Event(format_time(day), "test", f"day {day:%F}", {"n": start}))
    finally:
        store.close()


def contents(url: str) -> Contents:
    store = open_store(url)
    try:
        store.migrate()
        return store.query(LogQuery(limit=1_000_000)), store.events(limit=1000), store.positions()
    finally:
        store.close()


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def folder_names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name != ".lock")


def app() -> typer.Typer:
    cli = typer.Typer()
    register(cli)
    return cli


def invoke(settings: Settings, *args: str) -> Any:
    env = {"PHOENIX_HOME": str(settings.home), "DB_CONNECTION_STRING": settings.db_url}
    return CliRunner().invoke(app(), list(args), env=env)


@pytest.fixture
def sqlite_home(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "home")


@pytest.fixture
def backed_up(sqlite_home: Settings) -> tuple[Settings, BackupResult]:
    """A SQLite store with 50 records and an event, and one backup of it."""
    serve(sqlite_home, DAY0, 50)
    return sqlite_home, run_backup(sqlite_home, clock=at(DAY0 + timedelta(days=1, hours=3)))


# -- round trips ---------------------------------------------------------------------------


def test_sqlite_round_trip_restores_identical_records(
    sqlite_home: Settings, tmp_path: Path
) -> None:
    serve(sqlite_home, DAY0, 300)
    serve(sqlite_home, DAY0 + timedelta(days=1), 200, start=300)
    (sqlite_home.logs_dir / "gunicorn.log").write_text("worker booted\n")
    result = run_backup(sqlite_home, clock=at(DAY0 + timedelta(days=1, hours=12)))
    manifest = result.manifest
    assert (manifest.records, manifest.events) == (500, 2)
    assert manifest.journal_days == ("2026-03-01",)  # today's (03-02) is not closed yet
    assert manifest.server_logs == ("gunicorn.log.20260302T120000Z",)
    assert "password" not in json.dumps(manifest.source)
    for path in scan(sqlite_home.backups_dir)[0].files:
        assert path.stat().st_mode & 0o777 == 0o600
    assert sqlite_home.backups_dir.stat().st_mode & 0o777 == 0o700
    # Rotated into the archive: the live log is empty, the rotated copy gone once archived.
    assert (sqlite_home.logs_dir / "gunicorn.log").read_text() == ""
    assert sorted(p.name for p in sqlite_home.logs_dir.iterdir()) == ["gunicorn.log"]
    assert manifest.archive is not None
    with tarfile.open(sqlite_home.backups_dir / manifest.archive.file) as tar:
        assert sorted(tar.getnames()) == [
            "journal/access-2026-03-01.jsonl",
            "logs/gunicorn.log.20260302T120000Z",
        ]
        member = tar.extractfile("logs/gunicorn.log.20260302T120000Z")
        assert member is not None and member.read() == b"worker booted\n"

    target = f"sqlite:///{tmp_path / 'restored' / 'phoenix.sqlite3'}"
    restored = restore_backup(result.manifest_path, target)
    assert (restored.records, restored.events) == (500, 2)
    assert contents(target) == contents(sqlite_home.db_url)


def test_sqlite_snapshot_is_consistent_while_the_collector_writes(sqlite_home: Settings) -> None:
    serve(sqlite_home, DAY0, 2000)
    stop = threading.Event()

    def write() -> None:
        store = open_store(sqlite_home.db_url)
        file, offset = "access-2026-03-05.jsonl", 0
        while not stop.is_set():
            entries = [
                JournalEntry(position_key(file, offset + i), file, offset + i, record(i, DAY0))
                for i in range(20)
            ]
            store.commit_batch(file, offset, offset + 20, entries)
            offset += 20
        store.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = run_backup(sqlite_home, verify=True, clock=at(DAY0 + timedelta(days=1)))
    finally:
        stop.set()
        writer.join()
    # --verify restored it and found exactly the counts read inside the snapshot.
    assert result.manifest.verified_at is not None
    assert result.manifest.records >= 2000


def test_postgresql_round_trip_into_a_fresh_database(
    tmp_path: Path, postgres_db_url: str, postgres_server: PostgresServer
) -> None:
    settings = settings_for(tmp_path / "home", postgres_db_url)
    serve(settings, DAY0, 400)
    serve(settings, DAY0 + timedelta(days=1), 100, start=400)
    result = run_backup(settings, verify=True, clock=at(DAY0 + timedelta(days=2, hours=3)))
    manifest = result.manifest
    assert manifest.database.file.endswith(".pgdump") and manifest.backend == "postgresql"
    assert (manifest.records, manifest.events) == (500, 2)
    assert manifest.verified_at is not None  # restored into a scratch database and compared
    assert postgres_server.password not in result.manifest_path.read_text()

    target = postgres_server.create_database()
    try:
        restored = restore_backup(result.manifest_path, target)
        assert (restored.records, restored.events) == (500, 2)
        assert contents(target) == contents(postgres_db_url)
        # Restoring again over the restored database replaces it (pg_restore --clean).
        restore_backup(result.manifest_path, target)
        assert contents(target) == contents(postgres_db_url)
    finally:
        postgres_server.drop_database(target)


def test_mongodb_round_trip(tmp_path: Path) -> None:
    if not os.environ.get(MONGO_ENV):
        pytest.skip(MONGO_SKIP)
    source, target = fresh_mongo_url(os.environ[MONGO_ENV]), fresh_mongo_url(os.environ[MONGO_ENV])
    try:
        settings = settings_for(tmp_path / "home", source)
        serve(settings, DAY0, 300)
        result = run_backup(settings, verify=True, clock=at(DAY0 + timedelta(days=1)))
        assert result.manifest.verified_at is not None
        restore_backup(result.manifest_path, target)
        assert contents(target)[0] == contents(source)[0]
    finally:
        drop_mongo_database(source)
        drop_mongo_database(target)


# -- refusals: corrupt, truncated, mismatched ----------------------------------------------


def damaged_target(tmp_path: Path) -> tuple[str, bytes]:
    """A database with one record of its own, to prove a refused restore leaves it alone."""
    target_settings = settings_for(tmp_path / "other")
    serve(target_settings, DAY0, 1)
    return target_settings.db_url, Path(target_settings.db_url[len("sqlite:///") :]).read_bytes()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupt_file_is_refused_and_nothing_changes(
    backed_up: tuple[Settings, BackupResult], tmp_path: Path
) -> None:
    settings, result = backed_up
    target, before = damaged_target(tmp_path)
    dump = settings.backups_dir / result.manifest.database.file
    flip_a_byte(dump)
    outcome = invoke(settings, "restore", str(dump), "--into", target)
    assert outcome.exit_code == exitcodes.DATAERR
    assert "is corrupt: its sha256" in outcome.output
    assert "nothing was changed" in outcome.output
    assert Path(target[len("sqlite:///") :]).read_bytes() == before
    assert "sha256" in (scan(settings.backups_dir, deep=True)[0].problem or "")


def test_a_truncated_file_is_refused_and_nothing_changes(
    backed_up: tuple[Settings, BackupResult], tmp_path: Path
) -> None:
    settings, result = backed_up
    target, before = damaged_target(tmp_path)
    dump = settings.backups_dir / result.manifest.database.file
    os.truncate(dump, dump.stat().st_size // 2)
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == exitcodes.DATAERR
    assert "truncated" in outcome.output
    assert Path(target[len("sqlite:///") :]).read_bytes() == before
    # Listed as bad, and no longer "the newest good backup".
    assert not scan(settings.backups_dir)[0].good


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("count", "was edited or damaged"),  # hand-edited: its own checksum no longer matches
        ("count-resealed", "mismatched"),  # consistent manifest, wrong count: the dump says so
        ("sha-resealed", "is corrupt: its sha256"),
    ],
)
def test_a_mismatched_manifest_is_refused(
    backed_up: tuple[Settings, BackupResult], tmp_path: Path, edit: str, message: str
) -> None:
    _, result = backed_up
    target, before = damaged_target(tmp_path)
    manifest = result.manifest
    if edit == "count":
        body = json.loads(result.manifest_path.read_text())
        body["records"] += 1
        result.manifest_path.write_text(json.dumps(body))
    elif edit == "count-resealed":
        result.manifest_path.write_bytes(replace(manifest, records=manifest.records + 1).to_json())
    else:
        database = replace(manifest.database, sha256="0" * 64)
        result.manifest_path.write_bytes(replace(manifest, database=database).to_json())
    with pytest.raises(BadBackup, match=message) as caught:
        restore_backup(result.manifest_path, target)
    assert caught.value.code == exitcodes.DATAERR
    assert Path(target[len("sqlite:///") :]).read_bytes() == before
    assert not any(p.name.startswith(".tmp-") for p in Path(target[10:]).parent.iterdir())


def test_a_postgresql_dump_that_disagrees_with_its_manifest_is_refused(
    tmp_path: Path, postgres_db_url: str, postgres_server: PostgresServer
) -> None:
    settings = settings_for(tmp_path / "home", postgres_db_url)
    serve(settings, DAY0, 30)
    result = run_backup(settings, clock=at(DAY0 + timedelta(days=1)))
    resealed = replace(result.manifest, events=result.manifest.events + 5)
    result.manifest_path.write_bytes(resealed.to_json())
    target = postgres_server.create_database()
    try:
        serve(settings_for(tmp_path / "t", target), DAY0, 3)
        before = contents(target)
        with pytest.raises(BadBackup, match="mismatched"):
            restore_backup(result.manifest_path, target)
        assert contents(target) == before
    finally:
        postgres_server.drop_database(target)


def test_a_backup_of_one_kind_is_not_restored_into_another(
    backed_up: tuple[Settings, BackupResult], postgres_url: str
) -> None:
    settings, result = backed_up
    outcome = invoke(settings, "restore", result.manifest.id, "--into", postgres_url)
    assert outcome.exit_code == 64
    assert "is a sqlite backup" in outcome.output
    assert "password" not in outcome.output


# -- failures: full disk, unwritable folder, database down ---------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """PHOENIX_HOME/backups on a 256 KiB tmpfs (needs root and mount; skipped otherwise)."""
    folder = tmp_path / "home" / "backups"
    folder.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); see the ENOSPC test")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_fails_cleanly_and_keeps_the_earlier_backups(
    tiny_disk: Path, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path / "home")
    serve(settings, DAY0, 20)
    first = run_backup(settings, clock=at(DAY0 + timedelta(days=1)))
    before = {name: (tiny_disk / name).read_bytes() for name in folder_names(tiny_disk)}
    serve(settings, DAY0 + timedelta(days=1), 3000, start=20, noise=100)  # ~600 KB of entropy
    notices: list[tuple[str, str]] = []
    with pytest.raises(CannotWrite) as caught:
        run_backup(
            settings,
            clock=at(DAY0 + timedelta(days=2)),
            notify=lambda title, body: notices.append((title, body)),
        )
    assert caught.value.code == 73
    assert "No space left" in str(caught.value) or "disk is full" in str(caught.value)
    assert {name: (tiny_disk / name).read_bytes() for name in folder_names(tiny_disk)} == before
    assert not [name for name in os.listdir(tiny_disk) if name.startswith(".tmp-")]
    verify_backup(first.manifest_path)
    assert len(notices) == 1 and first.manifest.id in notices[0][1]
    # And through the command: the same refusal, exit code 73.
    outcome = invoke(settings, "backup")
    assert outcome.exit_code == 73, outcome.output
    assert folder_names(tiny_disk) == sorted(before)


def test_enospc_on_the_last_write_removes_the_whole_new_backup(
    backed_up: tuple[Settings, BackupResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, first = backed_up
    before = folder_names(settings.backups_dir)
    (settings.logs_dir / "haproxy.log").write_text("line before the failed backup\n")

    def disk_full(folder: Path, manifest: Any) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "write_manifest", disk_full)
        with pytest.raises(CannotWrite, match="No space left"):
            run_backup(settings, clock=at(DAY0 + timedelta(days=2)))
    # The dump and archive were already renamed into place: they are gone again.
    assert folder_names(settings.backups_dir) == before
    verify_backup(first.manifest_path)
    # The log rotated for it waits beside the live one, and goes into the next archive.
    rotated = settings.logs_dir / "haproxy.log.20260303T000000Z"
    assert rotated.read_text() == "line before the failed backup\n"
    (settings.logs_dir / "haproxy.log").write_text("line after\n")
    later = run_backup(settings, clock=at(DAY0 + timedelta(days=3)))
    assert later.manifest.server_logs == (rotated.name, "haproxy.log.20260304T000000Z")
    assert not rotated.exists()


def test_an_unwritable_backups_folder_exits_73(sqlite_home: Settings) -> None:
    serve(sqlite_home, DAY0, 5)
    sqlite_home.backups_dir.write_text("a file where the folder should be")
    outcome = invoke(sqlite_home, "backup")
    assert outcome.exit_code == 73
    assert "cannot write" in outcome.output


def test_a_database_down_exits_69_notifies_and_keeps_the_earlier_backups(
    backed_up: tuple[Settings, BackupResult],
) -> None:
    settings, first = backed_up
    before = folder_names(settings.backups_dir)
    down = replace(settings, db_url=f"postgresql://phoenix:hunter2@127.0.0.1:{free_port()}/phoenix")
    notices: list[tuple[str, str]] = []
    events: list[tuple[str, str, dict[str, Any]]] = []
    with pytest.raises(SourceUnavailable) as caught:
        run_backup(
            down,
            clock=at(DAY0 + timedelta(days=2)),
            notify=lambda title, body: notices.append((title, body)),
            record_event=lambda kind, message, data: events.append((kind, message, data)),
        )
    assert caught.value.code == 69
    assert "is unavailable" in str(caught.value) and "hunter2" not in str(caught.value)
    [(title, body)] = notices
    assert "backup failed" in title
    assert f"the newest good one is {first.manifest.id}" in body and "hunter2" not in body
    assert events[0][0] == "backup_failed" and events[0][2]["code"] == 69
    assert folder_names(settings.backups_dir) == before
    verify_backup(first.manifest_path)
    outcome = CliRunner().invoke(
        app(),
        ["backup"],
        env={"PHOENIX_HOME": str(settings.home), "DB_CONNECTION_STRING": down.db_url},
    )
    assert outcome.exit_code == 69 and "hunter2" not in outcome.output


def test_a_missing_pg_dump_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, postgres_db_url: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("glob.glob", lambda _pattern: [])
    with pytest.raises(SourceUnavailable, match="apt-get install postgresql-client"):
        run_backup(settings_for(tmp_path / "home", postgres_db_url))


# -- rotation over ten simulated days ------------------------------------------------------


def test_ten_simulated_days_keep_exactly_the_last_seven(sqlite_home: Settings) -> None:
    """Each day: requests all day, a server log line; at 03:00 the next day, the backup."""
    sqlite_home.logs_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for day in range(10):
        serve(sqlite_home, DAY0 + timedelta(days=day, hours=10), 10, start=10 * day)
        with (sqlite_home.logs_dir / "phoenix.log").open("a") as log:
            log.write(f"day {day}\n")
        if day == 9:  # the last night: a request just after midnight opens today's file
            serve(sqlite_home, DAY0 + timedelta(days=10, minutes=5), 1, start=1000)
        results.append(run_backup(sqlite_home, clock=at(DAY0 + timedelta(days=day + 1, hours=3))))

    entries = scan(sqlite_home.backups_dir)
    assert [entry.id for entry in entries] == [r.manifest.id for r in results[3:]]
    assert [entry.created_at.day for entry in entries] == list(range(5, 12))  # March 5..11
    assert all(entry.good for entry in entries)
    journal = sorted(path.name for path in sqlite_home.journal_dir.iterdir())
    assert journal == [f"access-2026-03-{day:02d}.jsonl" for day in range(5, 12)]
    # Each backup archived the day that had just closed, and the log lines since the last one.
    assert [r.manifest.journal_days for r in results] == [
        (f"2026-03-{day:02d}",) for day in range(1, 11)
    ]
    assert results[-1].pruned.delete_backups == (results[2].manifest.id,)
    assert (sqlite_home.logs_dir / "phoenix.log").read_text() == ""
    # The newest backup holds every record, including those of the pruned days' files.
    assert results[-1].manifest.records == 101


def test_the_newest_good_backup_survives_a_week_of_failures(
    backed_up: tuple[Settings, BackupResult],
) -> None:
    settings, first = backed_up
    down = replace(settings, db_url=f"postgresql://u:p@127.0.0.1:{free_port()}/x")
    for day in range(2, 12):
        with pytest.raises(SourceUnavailable):
            run_backup(down, clock=at(DAY0 + timedelta(days=day)))
    assert [entry.id for entry in scan(settings.backups_dir)] == [first.manifest.id]
    later = run_backup(settings, clock=at(DAY0 + timedelta(days=12)))
    assert later.pruned.delete_backups == (first.manifest.id,)


# -- the commands --------------------------------------------------------------------------


def test_backup_verify_then_backups_lists_age_size_records_verified(sqlite_home: Settings) -> None:
    serve(sqlite_home, DAY0, 42)
    outcome = invoke(sqlite_home, "backup", "--verify")
    assert outcome.exit_code == 0, outcome.output
    assert "42 records" in outcome.output and "verified" in outcome.output

    listing = invoke(sqlite_home, "backups")
    assert listing.exit_code == 0, listing.output
    [entry] = scan(sqlite_home.backups_dir)
    assert entry.id in listing.output
    for text in ("age", "size", "records", "verified", "42", "yes", "ok"):
        assert text in listing.output

    as_json = json.loads(invoke(sqlite_home, "backups", "--json", "--check").output)
    [row] = as_json
    assert row["records"] == 42 and row["good"] and row["verified_at"]
    assert row["size"] > 0 and 0 <= row["age_s"] < 600


def test_restore_into_the_configured_database_asks_first(
    backed_up: tuple[Settings, BackupResult],
) -> None:
    settings, result = backed_up
    serve(settings, DAY0 + timedelta(days=1), 5, start=50)  # written after the backup
    before = contents(settings.db_url)
    refused = invoke(settings, "restore", result.manifest.id)
    assert refused.exit_code == 64 and "--yes" in refused.output
    assert contents(settings.db_url) == before

    done = invoke(settings, "restore", str(result.manifest_path), "--yes")
    assert done.exit_code == 0, done.output
    rows, _, positions = contents(settings.db_url)
    assert len(rows) == 50 and positions == result.manifest.positions


def test_restore_of_an_unknown_backup_exits_66(sqlite_home: Settings, tmp_path: Path) -> None:
    for name in ("phoenix-20200101T000000Z", "nothing-here"):
        outcome = invoke(sqlite_home, "restore", name, "--into", "sqlite:///x")
        assert outcome.exit_code == 66
        assert "no such backup" in outcome.output
    stranger = tmp_path / "notes.txt"
    stranger.write_text("not a backup")
    outcome = invoke(sqlite_home, "restore", str(stranger), "--into", "sqlite:///x")
    assert outcome.exit_code == exitcodes.DATAERR and "not a phoenix backup" in outcome.output


def test_manifest_round_trip_and_locate(backed_up: tuple[Settings, BackupResult]) -> None:
    settings, result = backed_up
    folder = settings.backups_dir
    for name in folder_names(folder):
        assert locate(folder / name, folder) == result.manifest_path
    assert locate(result.manifest.id, folder) == result.manifest_path
    assert manifest_module.read_manifest(result.manifest_path) == result.manifest


def test_a_mongodb_export_is_checked_before_anything_is_touched(tmp_path: Path) -> None:
    """The streamed MongoDB export's counts and framing are checked before connecting."""
    from bson import ObjectId, json_util

    from cloud_phoenix.backup import mongodb as mongo_backend

    dump = tmp_path / "phoenix-20260301T000000Z.mongo.jsonl.gz"
    lines = [json.dumps(mongo_backend.HEADER)]
    for n in range(3):
        document = {"_id": f"2026-03-01:{n:012d}", "time": format_time(DAY0), "status": 200}
        lines.append(json_util.dumps({"c": "logs", "d": document}))
    lines.append(json_util.dumps({"c": "events", "d": {"_id": ObjectId(), "kind": "k"}}))
    dump.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    artefact = manifest_module.Artefact(dump.name, mongo_backend.JSONL, 0, "")
    manifest = manifest_module.Manifest(
        "phoenix-20260301T000000Z", format_time(DAY0), "mongodb", "mongodb://h/db", 4, 1, artefact
    )
    # Port 9 (discard) on loopback: were it contacted, the error would be "unavailable".
    url = "mongodb://127.0.0.1:9/db"
    with pytest.raises(BadBackup, match=r"holds 3 records and 1 events.*says 4 and 1"):
        mongo_backend.restore(dump, url, manifest, lambda *_: None)
    dump.write_bytes(gzip.compress(b'{"format": "something else"}\n'))
    with pytest.raises(BadBackup, match="not a cloud-phoenix MongoDB export"):
        mongo_backend.restore(dump, url, manifest, lambda *_: None)
    dump.write_bytes(b"\x1f\x8b not gzip at all")
    with pytest.raises(BadBackup, match="cannot be read"):
        mongo_backend.restore(dump, url, manifest, lambda *_: None)
