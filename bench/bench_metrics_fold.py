"""Benchmark a /metrics scrape with 1,000 dead workers' files against the same folder folded.

Run from the repository root: `.venv/bin/python bench/bench_metrics_fold.py [--quick]`.

A helper process forks DEAD workers one after the other; each counts requests on four routes
in prometheus_client's multi-process files, as a worker of `phoenix up` does, and exits. The
scrape is `Metrics.render()`, what a worker runs for GET /metrics, timed over SCRAPES calls
with the dead workers' files in the folder (as before the fold existed), then again once
`fold_dead` has folded them into the archive (what the gunicorn master does when a worker
exits). Also timed: that first fold, and the fold of one more dead worker into the archive
(the master's cost per crash).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from cloud_phoenix.app.metrics import Metrics
from cloud_phoenix.app.metricsfold import fold_dead
from report import Row, print_table, say
from stats import median, ratio

Key = tuple[str, tuple[tuple[str, str], ...]]  # a sample's name and labels

WORKERS = """
import os, sys
from pathlib import Path
from cloud_phoenix.app.metrics import Metrics

directory, count = Path(sys.argv[1]), int(sys.argv[2])
for n in range(count):
    pid = os.fork()
    if pid == 0:
        metrics = Metrics(directory)
        for k, route in enumerate(("/", "/health", "/metrics", "/crash")):
            metrics.observe(route, "GET", 500 if route == "/crash" else 200, 0.002 * k)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def dead_workers(directory: Path, count: int) -> None:
    """`count` workers that counted and exited; their live gauges are gone, as the gunicorn
    master's child_exit has always removed them."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    argv = [sys.executable, "-c", WORKERS, str(directory), str(count)]
    subprocess.run(argv, env=env, check=True, timeout=600)
    for gauge in directory.glob("gauge_live*.db"):
        mark_process_dead(int(gauge.stem.rpartition("_")[2]), str(directory))  # type: ignore[no-untyped-call]


def figures(directory: Path) -> dict[Key, float]:
    text = Metrics(directory).render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_ms(directory: Path, scrapes: int) -> list[float]:
    metrics = Metrics(directory)
    times = []
    for _ in range(scrapes):
        started = time.perf_counter()
        metrics.render()
        times.append((time.perf_counter() - started) * 1000)
    return times


def alike(a: dict[Key, float], b: dict[Key, float]) -> bool:
    """The same samples, the values equal but for float rounding (sums in another order)."""
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-9) for k in a)


def files(directory: Path) -> int:
    return len(list(directory.glob("*.db")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 dead workers, 10 scrapes")
    quick = parser.parse_args().quick
    dead, scrapes = (100, 10) if quick else (1000, 30)
    say(f"metrics fold: {dead} dead workers, {scrapes} scrapes each side, {os.cpu_count()} cores,")
    say(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp:
        directory = Path(tmp)
        dead_workers(directory, dead)
        files_before = files(directory)
        before = scrape_ms(directory, scrapes)
        figures_before = figures(directory)
        started = time.perf_counter()
        folded = fold_dead(directory)
        first_fold_ms = (time.perf_counter() - started) * 1000
        files_after = files(directory)
        after = scrape_ms(directory, scrapes)
        same = alike(figures(directory), figures_before)
        dead_workers(directory, 1)
        started = time.perf_counter()
        fold_dead(directory)
        one_fold_ms = (time.perf_counter() - started) * 1000
    say(f"load average at the end {os.getloadavg()[0]:.2f}")
    speedup = ratio(median(before), median(after))
    print_table(
        [
            Row(
                f"scrape with {dead} dead workers / folded",
                "-",
                f"{speedup:.0f} times faster",
                None,
                f"median {median(before):.1f} ms over {files_before} files, "
                f"{median(after):.2f} ms over {files_after} once {folded} were folded; "
                f"the same figures before and after: {same}",
            ),
            Row(
                "fold",
                "-",
                f"{one_fold_ms:.1f} ms",
                None,
                f"one dead worker into the archive (the master's cost per crash); the first "
                f"fold of all {dead}: {first_fold_ms:.0f} ms",
            ),
        ]
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
