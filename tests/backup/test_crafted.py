"""Crafted backups: a manifest's checksum is no signature, anyone can recompute it.

Each test takes a real SQLite backup, rewrites its manifest (or swaps a file) and reseals
the checksum the way anybody could. A manifest that names a file outside its backup, or a
dump that expands beyond the size its manifest declares, is refused with exit 65: by
`phoenix restore` and by `phoenix backups`, with nothing changed anywhere and nothing
learnt about files outside the backups folder.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud_phoenix.backup import (
    BackupResult,
    BadBackup,
    Manifest,
    restore_backup,
    run_backup,
)
from cloud_phoenix.backup import mongodb as mongo_backend
from cloud_phoenix.backup.manifest import Artefact
from cloud_phoenix.config import Settings
from cloud_phoenix.journal import format_time
from tests.backup.test_backup import DAY0, at, invoke, serve, settings_for

pytestmark = pytest.mark.integration

MiB = 1 << 20
Body = dict[str, Any]


# -- helpers -------------------------------------------------------------------------------


def reseal(manifest: Path, edit: Callable[[Body], None]) -> None:
    """Edit a manifest and recompute its checksum, as anyone holding the file can."""
    body = json.loads(manifest.read_text())
    del body["checksum"]
    edit(body)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    body["checksum"] = hashlib.sha256(canonical.encode()).hexdigest()
    manifest.write_text(json.dumps(body, indent=2))


def describe(path: Path) -> tuple[int, str]:
    return path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, Any]:
    """Every path under `root` with its kind and content: proof that nothing changed."""
    found: dict[str, Any] = {}
    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        if path.is_symlink():
            found[name] = ("link", os.readlink(path))
        elif path.is_file():
            found[name] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            found[name] = ("folder",)
    return found


def bomb(path: Path, expanded: int, prefix: bytes = b"") -> None:
    """A small gzip file that expands to `expanded` bytes (`prefix`, then zeros)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    with path.open("wb") as out:
        out.write(packer.compress(prefix))
        zeros = bytes(MiB)
        for _ in range((expanded - len(prefix)) // MiB):
            out.write(packer.compress(zeros))
        out.write(packer.flush())


@pytest.fixture
def crafted(tmp_path: Path) -> tuple[Settings, BackupResult, str]:
    """A SQLite backup of 50 records, and a target database of one record of its own."""
    settings = settings_for(tmp_path / "home")
    serve(settings, DAY0, 50)
    result = run_backup(settings, clock=at(DAY0 + timedelta(days=1, hours=3)))
    target = settings_for(tmp_path / "target")
    serve(target, DAY0, 1)
    (tmp_path / "outside").mkdir()
    return settings, result, target.db_url


# -- artefact names ------------------------------------------------------------------------


def point_outside(settings: Settings, result: BackupResult, case: str) -> str:
    """Make the manifest's database entry name a file that is not the backup's own; the
    file named holds the backup's real dump, so a restore that followed it would succeed.
    Returns what the refusal must quote."""
    folder = settings.backups_dir
    dump = folder / result.manifest.database.file
    outside = folder.parent.parent / "outside" / "x.db.gz"
    shutil.copyfile(dump, outside)
    backup = result.manifest.id
    if case == "symlink":  # the backup's own name, but a link to a file outside
        dump.unlink()
        dump.symlink_to(outside)
        return f"{dump.name} is not a regular file"
    if case == "foreign-id":  # the manifest speaks for another backup, whose file it names
        other = "phoenix-20250101T000000Z"
        shutil.copyfile(dump, folder / f"{other}.db.gz")

        def speak_for_another(body: Body) -> None:
            body.update(id=other, archive=None)
            body["database"]["file"] = f"{other}.db.gz"

        reseal(result.manifest_path, speak_for_another)
        return f"says it is backup '{other}'"
    name = {
        "parent": "../../outside/x.db.gz",
        "absolute": str(outside),
        "etc-shadow": "/etc/shadow",
        "dot-dot": "..",
        "not-the-id": "stranger.db.gz",
        "another-backup": f"{backup}-2.db.gz",
        "nul": f"{backup}\x00.db.gz",
        "markup": "[bold]x.db.gz",
    }[case]
    if "/" not in name and "\x00" not in name and name != "..":
        shutil.copyfile(dump, folder / name)

    def rename(body: Body) -> None:
        body["database"]["file"] = name

    reseal(result.manifest_path, rename)
    return repr(name)


NAME_CASES = [
    "parent",
    "absolute",
    "etc-shadow",
    "dot-dot",
    "not-the-id",
    "another-backup",
    "nul",
    "markup",
    "foreign-id",
    "symlink",
]


@pytest.mark.parametrize("case", NAME_CASES)
def test_restore_refuses_a_manifest_that_names_a_file_outside_its_backup(
    crafted: tuple[Settings, BackupResult, str], tmp_path: Path, case: str
) -> None:
    settings, result, target = crafted
    quoted = point_outside(settings, result, case)
    before = tree(tmp_path)
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 65, outcome.output
    assert "refused" in outcome.output and "nothing was changed" in outcome.output
    assert quoted in outcome.output  # the name, quoted and escaped
    assert "Traceback" not in outcome.output
    assert tree(tmp_path) == before  # the target untouched, nothing created anywhere
    # The library refuses the same way, whatever the caller.
    with pytest.raises(BadBackup, match="refused"):
        restore_backup(result.manifest_path, target)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("case", NAME_CASES)
def test_backups_refuses_such_a_manifest_and_says_nothing_of_the_file_it_names(
    crafted: tuple[Settings, BackupResult, str], tmp_path: Path, case: str
) -> None:
    settings, result, _ = crafted
    secret = tmp_path / "outside" / "x.db.gz"
    quoted = point_outside(settings, result, case)
    secret.write_bytes(b"s" * 4242)  # a size to look for; its content is no dump now
    if case == "etc-shadow":
        secret = Path("/etc/shadow")
    size = secret.stat().st_size
    before = tree(tmp_path)
    for args in (("backups",), ("backups", "--check"), ("backups", "--json")):
        outcome = invoke(settings, *args)
        assert outcome.exit_code == 65, (args, outcome.output)
        assert "refused" in outcome.stderr and quoted in outcome.stderr, outcome.output
        assert "Traceback" not in outcome.output
        # No size oracle: the listing never looks at the file the manifest names.
        assert f"{size} bytes" not in outcome.output and f"{size} of" not in outcome.output
        if args[-1] == "--json":
            [row] = [row for row in json.loads(outcome.stdout) if row["id"] == result.manifest.id]
            assert not row["good"] and quoted in row["problem"]
            files = [settings.backups_dir / name for name in row["files"]]
            assert not any(path.is_symlink() for path in files)
            assert row["size"] == sum(path.stat().st_size for path in files)
        elif case == "markup":
            assert "[bold]x.db.gz" in outcome.stdout  # the table shows it as text
    assert tree(tmp_path) == before


def test_a_genuine_backup_still_lists_and_restores(
    crafted: tuple[Settings, BackupResult, str],
) -> None:
    settings, result, target = crafted
    assert invoke(settings, "backups", "--check").exit_code == 0
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 0, outcome.output
    assert "50 records" in outcome.output


# -- decompression bound -------------------------------------------------------------------


def swap_in_a_bomb(
    settings: Settings, result: BackupResult, expanded: int, declare: int | None
) -> Path:
    """Replace the backup's dump by a gzip bomb and reseal the manifest around it:
    `declare` is the decompressed size it states (None: the field left out, as in a
    manifest written before phoenix declared it)."""
    dump = settings.backups_dir / result.manifest.database.file
    bomb(dump, expanded)
    size, sha = describe(dump)

    def edit(body: Body) -> None:
        body["database"].update(size=size, sha256=sha)
        body["database"].pop("expanded", None)
        if declare is not None:
            body["database"]["expanded"] = declare

    reseal(result.manifest_path, edit)
    return dump


def real_size(settings: Settings, result: BackupResult) -> int:
    with gzip.open(settings.backups_dir / result.manifest.database.file) as raw:
        return len(raw.read())


def test_a_new_manifest_declares_the_decompressed_size(
    crafted: tuple[Settings, BackupResult, str],
) -> None:
    settings, result, _ = crafted
    body = json.loads(result.manifest_path.read_text())
    assert body["database"]["expanded"] == real_size(settings, result)


def test_a_gzip_bomb_is_refused_before_it_is_written_out(
    crafted: tuple[Settings, BackupResult, str], tmp_path: Path
) -> None:
    settings, result, target = crafted
    declared = real_size(settings, result)
    dump = swap_in_a_bomb(settings, result, 64 * MiB, declared)
    assert dump.stat().st_size < 128 * 1024  # 64 MiB of zeros in under 128 KB
    before = tree(tmp_path)

    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 65, outcome.output
    assert f"expands beyond the {declared} bytes its manifest declares" in outcome.output
    assert "nothing was changed" in outcome.output
    assert tree(tmp_path) == before

    # Watched from inside: the scratch file beside the target never grows past the
    # declared size (plus one read), and memory stays flat.
    target_dir = Path(target.removeprefix("sqlite:///")).parent
    largest = 0

    def watch(_stage: str, _done: int, _total: int) -> None:
        nonlocal largest
        for path in target_dir.glob(".tmp-restore-*"):
            largest = max(largest, path.stat().st_size)

    tracemalloc.start()
    try:
        with pytest.raises(BadBackup, match="expands beyond"):
            restore_backup(result.manifest_path, target, watch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert largest <= declared + MiB
    assert peak < 16 * MiB
    assert tree(tmp_path) == before


def test_a_declared_size_beyond_the_free_space_is_refused_before_writing(
    crafted: tuple[Settings, BackupResult, str], tmp_path: Path
) -> None:
    settings, result, target = crafted
    swap_in_a_bomb(settings, result, 64 * MiB, 1 << 60)
    before = tree(tmp_path)
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 73, outcome.output
    assert "free" in outcome.output and "nothing was changed" in outcome.output
    assert tree(tmp_path) == before


def test_a_manifest_from_before_the_declared_size_still_restores(
    crafted: tuple[Settings, BackupResult, str],
) -> None:
    settings, result, target = crafted
    reseal(result.manifest_path, lambda body: body["database"].pop("expanded", None))
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 0, outcome.output
    assert "50 records" in outcome.output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs to restore into (needs root and mount; skipped otherwise)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_without_a_declared_size_a_bomb_stops_at_the_free_space(
    crafted: tuple[Settings, BackupResult, str], small_disk: Path
) -> None:
    settings, result, _ = crafted
    target = f"sqlite:///{small_disk / 'phoenix.sqlite3'}"
    swap_in_a_bomb(settings, result, 64 * MiB, None)
    outcome = invoke(settings, "restore", result.manifest.id, "--into", target)
    assert outcome.exit_code == 73, outcome.output
    assert "free" in outcome.output and "No space left" not in outcome.output
    assert list(small_disk.iterdir()) == []


# -- the streamed MongoDB export -----------------------------------------------------------


def mongo_manifest(dump: Path, expanded: int | None) -> Manifest:
    size, sha = describe(dump)
    declared = {} if expanded is None else {"expanded": expanded}
    artefact = Artefact(dump.name, mongo_backend.JSONL, size, sha, **declared)
    return Manifest(
        "phoenix-20260301T000000Z", format_time(DAY0), "mongodb", "mongodb://h/db", 1, 0, artefact
    )


@pytest.mark.parametrize("declared", [1000, None])
def test_a_mongodb_export_bomb_is_refused_in_bounded_memory(
    tmp_path: Path, declared: int | None
) -> None:
    """One endless line: refused past the declared size, or past the longest line a
    document can make when no size is declared, never read whole into memory."""
    dump = tmp_path / "phoenix-20260301T000000Z.mongo.jsonl.gz"
    header = json.dumps(mongo_backend.HEADER).encode() + b"\n"
    bomb(dump, 160 * MiB, prefix=header + b'{"c": "logs", "d": {"x": "')
    url = "mongodb://127.0.0.1:9/db"  # port 9 on loopback: never contacted
    tracemalloc.start()
    try:
        with pytest.raises(BadBackup, match=r"expands beyond|longer than") as caught:
            mongo_backend.restore(dump, url, mongo_manifest(dump, declared), lambda *_: None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == 65
    assert peak < 100 * MiB
