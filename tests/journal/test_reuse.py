"""Moving a journal file whose name another file had to a name of its own (journal.reuse)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud_phoenix.journal import (
    FILE_RE,
    INSTANCE_MAX,
    INSTANCE_PATTERN,
    AccessRecord,
    JournalWriter,
    format_time,
    journal_files,
    read_chunk,
)
from cloud_phoenix.journal.reuse import links, move_aside, moved_names, reissued_name

DAY = datetime(2026, 11, 27, tzinfo=UTC)


def record(n: int) -> AccessRecord:
    return AccessRecord(format_time(DAY), "GET", "/", "", 200, 5, 1.0, "", "", "", "w", f"r{n}")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("access-2026-11-27.jsonl", "access-2026-11-27.0badcafe.jsonl"),
        ("access-2026-11-27.pod-a.jsonl", "access-2026-11-27.pod-a-0badcafe.jsonl"),
        (
            f"access-2026-11-27.{'p' * INSTANCE_MAX}.jsonl",
            f"access-2026-11-27.{'p' * (INSTANCE_MAX - 9)}-0badcafe.jsonl",
        ),
    ],
)
def test_a_reissued_name_keeps_the_day_and_fits_the_pattern(name: str, expected: str) -> None:
    new = reissued_name(name, token="0badcafe")
    assert new == expected
    match = FILE_RE.match(new)
    assert match and re.fullmatch(INSTANCE_PATTERN, match[2])
    assert reissued_name(name) != reissued_name(name)  # random: 32 bits


def test_a_reissued_name_is_only_made_of_a_journal_name() -> None:
    with pytest.raises(ValueError, match="not a journal file name"):
        reissued_name("notes.txt")


def test_a_moved_file_keeps_its_writers_and_its_old_name_leads_to_it(tmp_path: Path) -> None:
    open_before = JournalWriter(tmp_path, clock=DAY.timestamp)
    open_before.append(record(0))
    name = "access-2026-11-27.jsonl"
    new = reissued_name(name)

    assert move_aside(tmp_path, name, new) is True
    assert move_aside(tmp_path, name, reissued_name(name)) is False  # a second collector
    open_before.append(record(1))  # the writer that held it open
    JournalWriter(tmp_path, clock=DAY.timestamp).append(record(2))  # one that opens the name

    # One file, listed under its own name only: read under both, it would be stored twice.
    assert journal_files(tmp_path) == [new]
    assert moved_names(tmp_path) == {name: new}
    chunk = read_chunk(tmp_path / new, 0, 10)
    assert [e.record.request_id for e in chunk.entries] == ["r0", "r1", "r2"]


def test_a_link_whose_file_is_gone_is_no_move_to_report(tmp_path: Path) -> None:
    name = "access-2026-11-27.jsonl"
    (tmp_path / name).write_bytes(record(0).to_line())
    new = reissued_name(name)
    move_aside(tmp_path, name, new)
    (tmp_path / new).unlink()  # pruned
    assert moved_names(tmp_path) == {}
    assert links(tmp_path) == [name]
    assert journal_files(tmp_path) == []


def test_a_move_never_replaces_a_file(tmp_path: Path) -> None:
    (tmp_path / "access-2026-11-27.jsonl").write_bytes(b"")
    (tmp_path / "access-2026-11-27.x.jsonl").write_bytes(record(0).to_line())
    with pytest.raises(FileExistsError):
        move_aside(tmp_path, "access-2026-11-27.jsonl", "access-2026-11-27.x.jsonl")
    assert (tmp_path / "access-2026-11-27.x.jsonl").read_bytes() == record(0).to_line()
