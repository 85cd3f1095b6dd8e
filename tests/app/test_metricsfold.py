"""Folding dead workers' Prometheus files: a scrape reads the same figures before and after,
the dead files go, and no scrape sees a counter go down while folds run.

The dead workers are real processes: a helper forks children that count requests in
prometheus_client's multi-process files (its mode is chosen when it is imported, so not in
this process) and exit.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cloud_phoenix.app import metricsfold
from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.metricsfold import NOTE, consistent_view, fold_dead

WORKERS = """
import os, sys
from pathlib import Path
from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.metricsfold import fold_dead

directory, count, fold = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "fold"
for n in range(count):
    pid = os.fork()
    if pid == 0:
        metrics = Metrics(directory)
        for k in range(3):
            metrics.observe("/", "GET", 200, 0.004 * k)
        metrics.observe("/crash", "GET", 500, 0.3)
        os._exit(0)
    os.waitpid(pid, 0)
    if fold:
        fold_dead(directory)
"""

GET_ROOT_200 = (("method", "GET"), ("route", "/"), ("status", "200"))
GET_CRASH_500 = (("method", "GET"), ("route", "/crash"), ("status", "500"))


def dead_workers(directory: Path, count: int, fold: bool = False) -> subprocess.Popen[bytes]:
    """Start `count` workers one after the other, each counting 4 requests and exiting (and
    a fold after each if `fold`), in the background."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    argv = [sys.executable, "-c", WORKERS, str(directory), str(count), "fold" if fold else "-"]
    return subprocess.Popen(argv, env=env)


def run_dead_workers(directory: Path, count: int) -> None:
    assert dead_workers(directory, count).wait(60) == 0


def request_samples(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = Metrics(directory).render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name in ("phoenix_requests", "phoenix_request_duration_seconds")
        for s in family.samples
    }


def requests_total(directory: Path) -> float:
    return sum(
        value
        for (name, _), value in request_samples(directory).items()
        if name == "phoenix_requests_total"
    )


def per_process_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.db") if p.stem.rpartition("_")[2].isdigit())


def test_a_fold_keeps_every_figure_and_removes_the_dead_files(tmp_path: Path) -> None:
    run_dead_workers(tmp_path, 5)
    before = request_samples(tmp_path)
    assert before[("phoenix_requests_total", GET_ROOT_200)] == 15
    assert fold_dead(tmp_path) == 10  # a counter and a histogram file each
    assert request_samples(tmp_path) == before
    # The live gauges are not folded: marking a process dead stays prometheus_client's.
    assert {name.partition("_")[0] for name in per_process_files(tmp_path)} == {"gauge"}
    run_dead_workers(tmp_path, 3)  # and into an archive that is already there
    assert fold_dead(tmp_path) == 6
    after = request_samples(tmp_path)
    assert after[("phoenix_requests_total", GET_CRASH_500)] == 8
    assert after[("phoenix_request_duration_seconds_count", (("route", "/"),))] == 24
    le_5ms = (("le", "0.005"), ("route", "/"))
    assert after[("phoenix_request_duration_seconds_bucket", le_5ms)] == 16  # 0 and 4 ms
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("gauge")) == [
        "counter_archive.db",
        "fold.lock",
        "histogram_archive.db",
    ]


def test_a_live_process_files_stay(tmp_path: Path) -> None:
    run_dead_workers(tmp_path, 1)
    [dead] = [p for p in tmp_path.glob("counter_*.db")]
    live = tmp_path / f"counter_{os.getpid()}.db"
    live.write_bytes(dead.read_bytes())
    assert fold_dead(tmp_path) == 2
    assert live.exists()
    assert requests_total(tmp_path) == 8  # the live copy and the archive


def test_a_fold_waits_for_the_scrapes_reading(tmp_path: Path) -> None:
    run_dead_workers(tmp_path, 2)
    files = per_process_files(tmp_path)
    with consistent_view(tmp_path):
        assert fold_dead(tmp_path, wait=0.05) == 0  # a scrape holds the folder: later
        assert per_process_files(tmp_path) == files
    assert fold_dead(tmp_path) == 4


def test_a_fold_interrupted_after_its_commit_is_finished_by_the_next_scrape(
    tmp_path: Path,
) -> None:
    """A master killed between writing the note and deleting the files it folded: the dead
    files and the new archive are both there, and a scrape must not count them twice."""
    run_dead_workers(tmp_path, 3)
    before = request_samples(tmp_path)
    assert metricsfold._commit(tmp_path) == 6  # what fold_dead does before it finishes
    assert (tmp_path / NOTE).exists()
    assert request_samples(tmp_path) == before
    assert not (tmp_path / NOTE).exists()
    assert {name.partition("_")[0] for name in per_process_files(tmp_path)} == {"gauge"}


def test_a_fold_interrupted_before_its_commit_leaves_nothing_behind(tmp_path: Path) -> None:
    run_dead_workers(tmp_path, 2)
    before = request_samples(tmp_path)
    (tmp_path / "counter_archive.db.tmp").write_bytes(b"half written")
    assert request_samples(tmp_path) == before  # a scrape reads only .db files
    assert fold_dead(tmp_path) == 4
    assert not list(tmp_path.glob("*.tmp"))
    assert request_samples(tmp_path) == before


def test_no_scrape_sees_a_counter_go_down_while_workers_die_and_are_folded(
    tmp_path: Path,
) -> None:
    """Workers die and are folded one after the other while this process scrapes back to
    back: each scrape's total is at least the one before, and none fails."""
    workers = dead_workers(tmp_path, 150, fold=True)
    seen = [requests_total(tmp_path)]
    while workers.poll() is None:
        seen.append(requests_total(tmp_path))
    assert workers.returncode == 0
    seen.append(requests_total(tmp_path))
    drops = [(a, b) for a, b in itertools.pairwise(seen) if b < a]
    assert not drops, f"{len(drops)} of {len(seen)} scrapes went down: {drops[:5]}"
    assert seen[-1] == 150 * 4
    assert len(per_process_files(tmp_path)) <= 150  # each worker's live gauge, no counter
