from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from cloud_phoenix.journal import (
    INSTANCE_MAX,
    MAX_VALUE_CHARS,
    POS_MAX_LENGTH,
    POS_PATTERN,
    READ_AHEAD,
    RECORD_FIELDS,
    RECORD_TYPES,
    AccessRecord,
    JournalWriter,
    TimeFormatter,
    cap_value,
    file_name,
    format_time,
    journal_files,
    journal_line,
    parse_time,
    position_key,
    read_chunk,
)


def record(n: int = 0, **changes: object) -> AccessRecord:
    fields: dict[str, object] = {
        "time": "2026-11-27T10:00:00.000001Z",
        "method": "GET",
        "path": f"/p{n}",
        "query": "a=1",
        "status": 200,
        "bytes": 10,
        "duration_ms": 1.5,
        "remote_addr": "127.0.0.1",
        "user_agent": 'ua "quoted" ✓',
        "referrer": "",
        "worker": "h:1",
        "request_id": f"r{n}",
    }
    fields.update(changes)
    return AccessRecord(**fields)  # type: ignore[arg-type]


def test_time_format_is_fixed_width_and_sorts_like_time() -> None:
    a = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    b = a + timedelta(microseconds=1)
    assert len(format_time(a)) == 27
    assert format_time(a) < format_time(b)
    assert parse_time(format_time(a)) == a


def test_years_before_1000_keep_four_digits_and_their_order() -> None:
    early = datetime(999, 12, 31, tzinfo=UTC)
    assert format_time(early) == "0999-12-31T00:00:00.000000Z"
    assert format_time(early) < format_time(datetime(1000, 1, 1, tzinfo=UTC))
    assert parse_time(format_time(early)) == early


def test_line_round_trip_keeps_every_field() -> None:
    original = record(7)
    line = original.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert AccessRecord.from_line(line.rstrip(b"\n")) == original


@pytest.mark.parametrize("line", [b"not json", b"[1,2]", b'{"time": "x"}', b"{}"])
def test_malformed_lines_raise_value_error(line: bytes) -> None:
    with pytest.raises(ValueError):
        AccessRecord.from_line(line)


def test_a_lone_surrogate_is_malformed_not_a_crash_later_in_the_store() -> None:
    line = record(1).to_line().replace(b'"path":"/p1"', b'"path":"/\\udc80"')
    assert b"udc80" in line
    with pytest.raises(ValueError):
        AccessRecord.from_line(line)


def test_writer_names_files_by_utc_day_and_rolls_over(tmp_path: Path) -> None:
    now = [datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)]
    writer = JournalWriter(tmp_path, clock=lambda: now[0].timestamp())  # noqa: PLW0108 - now[0] moves
    writer.append(record(1))
    now[0] += timedelta(seconds=2)
    writer.append(record(2))
    writer.close()
    assert journal_files(tmp_path) == ["access-2026-11-27.jsonl", "access-2026-11-28.jsonl"]
    assert file_name(now[0]) == "access-2026-11-28.jsonl"


def test_lines_from_two_writers_never_interleave(tmp_path: Path) -> None:
    clock = datetime(2026, 11, 27, tzinfo=UTC).timestamp
    first, second = JournalWriter(tmp_path, clock), JournalWriter(tmp_path, clock)
    for n in range(200):
        (first if n % 2 else second).append(record(n, user_agent="x" * (n * 37 % 3000)))
    chunk = read_chunk(tmp_path / "access-2026-11-27.jsonl", 0, max_records=1000)
    assert not chunk.malformed
    assert sorted(e.record.request_id for e in chunk.entries) == sorted(f"r{n}" for n in range(200))


def test_read_chunk_leaves_an_unfinished_line_for_later(tmp_path: Path) -> None:
    path = tmp_path / "access-2026-11-27.jsonl"
    whole = record(1).to_line()
    path.write_bytes(whole + record(2).to_line()[:20])
    chunk = read_chunk(path, 0, max_records=10)
    assert [e.record.request_id for e in chunk.entries] == ["r1"]
    assert chunk.end == len(whole)
    assert chunk.entries[0].pos == position_key(path.name, 0) == "2026-11-27:000000000000"


def test_read_chunk_skips_malformed_lines_and_reports_them(tmp_path: Path) -> None:
    path = tmp_path / "access-2026-11-27.jsonl"
    good = record(1).to_line()
    path.write_bytes(b"garbage\n" + good + b"\n")
    chunk = read_chunk(path, 0, max_records=10)
    assert chunk.malformed == [0]
    assert [e.offset for e in chunk.entries] == [8]
    assert chunk.end == path.stat().st_size


def test_read_chunk_honours_max_records(tmp_path: Path) -> None:
    path = tmp_path / "access-2026-11-27.jsonl"
    lines = [record(n).to_line() for n in range(5)]
    path.write_bytes(b"".join(lines))
    chunk = read_chunk(path, 0, max_records=2)
    assert len(chunk.entries) == 2
    assert chunk.end == len(lines[0]) + len(lines[1])


def test_writer_reports_an_unwritable_folder(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    tmp_path.chmod(0o500)
    try:
        writer = JournalWriter(tmp_path)
        with pytest.raises(OSError):
            writer.append(record())
        assert writer.last_error
    finally:
        tmp_path.chmod(0o700)


def test_writer_reports_a_full_disk(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    writer = JournalWriter(tmp_path, clock=lambda: datetime(2026, 11, 27, tzinfo=UTC).timestamp())
    (tmp_path / "access-2026-11-27.jsonl").symlink_to("/dev/full")
    with pytest.raises(OSError):
        writer.append(record())
    assert writer.last_error and "space" in writer.last_error.lower()


@pytest.mark.parametrize(
    "epoch", [0.0, 0.000001, 1.5, 59.999999, 86399.999999, 1_795_000_000.123456, 1_795_000_000.0]
)
def test_the_per_second_formatter_agrees_with_format_time(epoch: float) -> None:
    formatter = TimeFormatter()
    formatter(epoch - 1)  # a cached second that is not this one
    expected = format_time(datetime.fromtimestamp(epoch, UTC))
    assert formatter(epoch) == expected
    assert formatter(epoch) == expected  # from the cache


def test_the_per_second_formatter_never_goes_backwards_within_a_second() -> None:
    formatter = TimeFormatter()
    stamps = [formatter(1_795_000_000 + n / 1000) for n in range(2000)]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_a_chunk_bigger_than_one_read_ahead_is_read_whole(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path, clock=datetime(2026, 11, 27, tzinfo=UTC).timestamp)
    for n in range(1500):  # ~900 KiB: several read-aheads
        writer.append(record(n, user_agent="u" * 400))
    path = tmp_path / "access-2026-11-27.jsonl"
    chunk = read_chunk(path, 0, max_records=1200)
    assert [e.record.request_id for e in chunk.entries] == [f"r{n}" for n in range(1200)]
    rest = read_chunk(path, chunk.end, max_records=1200)
    assert [e.record.request_id for e in rest.entries] == [f"r{n}" for n in range(1200, 1500)]
    assert rest.end == path.stat().st_size


def test_a_line_longer_than_the_read_ahead_but_within_max_bytes_is_a_record(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(tmp_path, clock=datetime(2026, 11, 27, tzinfo=UTC).timestamp)
    writer.append(record(1, user_agent="u" * (READ_AHEAD + 1000)))
    writer.append(record(2))
    chunk = read_chunk(tmp_path / "access-2026-11-27.jsonl", 0, max_records=10)
    assert [e.record.request_id for e in chunk.entries] == ["r1", "r2"] and not chunk.malformed


def test_entries_carry_the_position_key_of_their_file(tmp_path: Path) -> None:
    writer = JournalWriter(
        tmp_path, clock=datetime(2026, 11, 27, tzinfo=UTC).timestamp, instance="pod-a"
    )
    writer.append(record(1))
    writer.append(record(2))
    name = "access-2026-11-27.pod-a.jsonl"
    chunk = read_chunk(tmp_path / name, 0, max_records=10)
    assert [e.pos for e in chunk.entries] == [position_key(name, e.offset) for e in chunk.entries]
    assert chunk.entries[1].pos.startswith("2026-11-27:pod-a:")


def test_a_value_past_the_cap_is_cut_with_a_visible_marker() -> None:
    assert MAX_VALUE_CHARS == 2048
    assert cap_value("") == ""
    assert cap_value("é" * MAX_VALUE_CHARS) == "é" * MAX_VALUE_CHARS  # characters, not bytes
    long = "a" * MAX_VALUE_CHARS + "b" * 12_345
    assert cap_value(long) == "a" * MAX_VALUE_CHARS + "...[truncated 12345 chars]"
    assert cap_value(long[:-12_344]) == "a" * MAX_VALUE_CHARS + "...[truncated 1 chars]"


def test_a_line_is_the_records_fields_by_name_in_order() -> None:
    original = record(3, user_agent="\udc80")  # a lone surrogate takes the slower encoder
    for line in (record(3).to_line(), original.to_line()):
        parsed = json.loads(line)
        assert list(parsed) == list(RECORD_FIELDS) == list(AccessRecord._fields)
    assert json.loads(original.to_line())["user_agent"] == "\udc80"


def test_a_mapping_of_the_fields_is_read_with_each_fields_type() -> None:
    loose = {**record(4)._asdict(), "status": "201", "bytes": 12.0, "duration_ms": 3}
    read = AccessRecord.from_mapping(loose)
    assert (read.status, read.bytes, read.duration_ms) == (201, 12, 3.0)
    assert [type(value) for value in read] == [RECORD_TYPES[name] for name in RECORD_FIELDS]
    with pytest.raises(ValueError, match="request_id"):
        AccessRecord.from_mapping({k: v for k, v in loose.items() if k != "request_id"})
    with pytest.raises(ValueError):
        AccessRecord.from_mapping({**loose, "status": "two"})


@pytest.mark.parametrize(
    "name",
    [
        "access-\u0662\u0660\u0662\u0666-\u0661\u0661-\u0662\u0668.jsonl",  # Arabic-Indic digits
        "access-2026-11-28.jsonl\n",
        "access-2026-11-28.pod-a\n.jsonl",
    ],
)
def test_only_ascii_digits_and_no_line_end_make_a_journal_file_name(
    tmp_path: Path, name: str
) -> None:
    (tmp_path / name).write_bytes(record().to_line())
    (tmp_path / "access-2026-11-28.jsonl").write_bytes(b"")
    assert journal_files(tmp_path) == ["access-2026-11-28.jsonl"]


@pytest.mark.parametrize("instance", ["pod-a\n", "\u0661pod", "-pod", "p" * (INSTANCE_MAX + 1)])
def test_an_instance_name_the_file_pattern_would_not_read_is_refused(
    tmp_path: Path, instance: str
) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        JournalWriter(tmp_path, instance=instance)


def test_the_longest_instance_name_gives_a_file_and_a_position_the_patterns_read(
    tmp_path: Path,
) -> None:
    writer = JournalWriter(
        tmp_path, clock=datetime(2026, 11, 27, tzinfo=UTC).timestamp, instance="p" * INSTANCE_MAX
    )
    writer.append(record())
    (name,) = journal_files(tmp_path)
    pos = read_chunk(tmp_path / name, 0, max_records=1).entries[0].pos
    assert re.fullmatch(POS_PATTERN, pos) and len(pos) == POS_MAX_LENGTH


def test_a_journal_line_has_the_records_fields_in_order() -> None:
    """journal_line spells the fields out (it runs once per request): they are the record's."""
    values = tuple(f"v{i}" for i in range(len(RECORD_FIELDS)))
    line = orjson.loads(journal_line(values))
    assert list(line) == list(RECORD_FIELDS)
    assert list(line.values()) == list(values)


_WRITTEN = AccessRecord(
    "2026-12-04T10:00:00.000001Z", "GET", "/x", "a=1", 200, 5, 1.5, "127.0.0.1", "ua", "", "h:1",
    "r1",
)  # fmt: skip


@pytest.mark.parametrize(
    "line",
    [
        _WRITTEN.to_line(),  # as the writer makes it: the fast way
        orjson.dumps(dict(reversed(list(_WRITTEN._asdict().items())))),  # another key order
        _WRITTEN.to_line().replace(b'"duration_ms":1.5', b'"duration_ms":2'),  # an int
        _WRITTEN.to_line().replace(b'"status":200', b'"status":true'),  # a bool
        _WRITTEN.to_line().replace(b'"status":200', b'"status":"200"'),  # a string
        _WRITTEN.to_line().replace(b'"path":"/x"', b'"path":7'),  # a number for a string
        _WRITTEN.to_line().replace(b'"request_id":"r1"}', b'"request_id":"r1","more":1}'),
        _WRITTEN.to_line().replace(b'"request_id":"r1",', b"").replace(b',"request_id":"r1"', b""),
    ],
)
def test_a_line_is_read_the_same_whether_it_is_as_written_or_not(line: bytes) -> None:
    """The collector takes a line as the writer made it without from_mapping's conversions;
    any line reads as from_mapping reads it, or is refused as it refuses it."""
    try:
        expected: AccessRecord | None = AccessRecord.from_mapping(orjson.loads(line))
    except ValueError:
        expected = None
    if expected is None:
        with pytest.raises(ValueError):
            AccessRecord.from_line(line)
    else:
        got = AccessRecord.from_line(line)
        assert got == expected
        assert [type(value) for value in got] == [type(value) for value in expected]
