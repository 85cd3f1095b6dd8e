"""Benchmark the whole `phoenix up` stack against the same stack serving a bare ASGI app.

Run from the repository root: `.venv/bin/python bench/bench_stack.py [--quick]`.

GET / req/s (wrk, 1 thread) through the stack (HAProxy edge, gunicorn with uvicorn workers,
journal, collector process, autoscaler) / the same stack whose workers serve
`bench/bare_app.py` (PHOENIX_WORKER_APP) answering a page of the same size. Both stacks run
exactly WORKERS workers (PHOENIX_MIN_WORKERS = PHOENIX_MAX_WORKERS), so the autoscaler cannot
change the count mid-round. Rounds alternate the order; the figure is the median of the
ratios within rounds. After each Phoenix round the bench waits until the collector has
written the round's journal to the store and reports how long that took.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from report import Process, Row, run_bench, say
from stack import ROLES, Stack, start_stack
from stats import median, round_ratios, spread
from wrk import WrkResult, run_wrk

WORKERS = 2  # one per core of the benchmark machine; fixed for the whole run


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how many: the full run and the --quick smoke run differ only here."""

    rounds: int = 5
    seconds: float = 5.0
    connections: int = 32
    warmup: float = 2.0


FULL = Plan()
QUICK = Plan(rounds=1, seconds=2.0, warmup=1.0)


@dataclass
class Side:
    """What one stack did over the rounds."""

    rps: list[float] = field(default_factory=list)
    failed: int = 0
    cpu_us: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROLES})

    def add(self, result: WrkResult, cpu: dict[str, float]) -> None:
        """One round: its throughput, its failures, each role's CPU µs per request."""
        self.rps.append(result.rps)
        self.failed += result.non_2xx + result.socket_errors
        for role in ROLES:
            self.cpu_us[role].append(cpu[role] / max(1, result.requests) * 1e6)


def one_round(wrk: str, stack: Stack, plan: Plan) -> tuple[WrkResult, dict[str, float]]:
    """A wrk run against the stack's edge, and the CPU each role used meanwhile."""
    if stack.workers() != (WORKERS, WORKERS):
        raise RuntimeError(f"{stack.name}: workers (desired, running) {stack.workers()}")
    before = stack.cpu_by_role()
    result = run_wrk(wrk, stack.url + "/", plan.connections, plan.seconds)
    after = stack.cpu_by_role()
    return result, {role: after[role] - before[role] for role in ROLES}


def measure(wrk: str, phoenix: Stack, bare: Stack, plan: Plan) -> list[Row]:
    say(
        f"\nGET / through the stack: wrk -t1 -c{plan.connections} -d{plan.seconds:g}s, "
        f"{WORKERS} workers each, {plan.rounds} rounds, order alternating"
    )
    for stack in (phoenix, bare):  # warm-up, not counted
        run_wrk(wrk, stack.url + "/", plan.connections, plan.warmup)
    phoenix.wait_collected()
    sides = {"phoenix": Side(), "bare": Side()}
    catch_up: list[float] = []
    with_catch_up: list[float] = []
    for i in range(plan.rounds):
        for stack in (phoenix, bare) if i % 2 == 0 else (bare, phoenix):
            result, cpu = one_round(wrk, stack, plan)
            sides[stack.name].add(result, cpu)
            note = ""
            if stack is phoenix:  # the collector's backlog must not run into the next round
                catch_up.append(phoenix.wait_collected())
                with_catch_up.append(result.requests / (result.seconds + catch_up[-1]))
                note = f", collector caught up {catch_up[-1]:.1f} s later"
            say(f"  round {i + 1} {stack.name:7} {result.rps:8.0f} req/s{note}")
    p, b = sides["phoenix"], sides["bare"]
    ratios = round_ratios(p.rps, b.rps)
    print_cpu(sides)
    return [
        Row(
            "GET / req/s via phoenix up, phoenix / bare",
            ">= 0.5",
            f"{median(ratios):.2f}",
            median(ratios) >= 0.5,
            f"round ratios {spread(ratios)}; medians of {plan.rounds} rounds: phoenix "
            f"{median(p.rps):.0f} req/s, bare {median(b.rps):.0f} req/s",
        ),
        Row(
            "  same, counting collector catch-up",
            "-",
            f"{median(round_ratios(with_catch_up, b.rps)):.2f}",
            None,
            f"requests / (round + seconds until /checkdb showed the journal in the store); "
            f"catch-up {spread(catch_up, '.1f')} s after a {plan.seconds:g} s round",
        ),
        Row(
            "failed GET / (both stacks)",
            "0",
            str(p.failed + b.failed),
            p.failed + b.failed == 0,
            f"non-2xx and socket errors seen by wrk: phoenix {p.failed}, bare {b.failed}",
        ),
    ]


def print_cpu(sides: dict[str, Side]) -> None:
    """Median CPU µs per request of each role: where the stack's time goes."""
    say("\nCPU per request (µs, median of rounds; user + system of each role's processes)")
    say("\n| role | phoenix | bare |\n| --- | --- | --- |")
    totals = {name: 0.0 for name in sides}
    for role in ROLES:
        cells = []
        for name, side in sides.items():
            value = median(side.cpu_us[role])
            totals[name] += value
            cells.append(f"{value:.0f}")
        say(f"| {role} | {' | '.join(cells)} |")
    say(f"| total | {' | '.join(f'{totals[n]:.0f}' for n in sides)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds: a smoke run")
    plan = QUICK if parser.parse_args().quick else FULL

    def body(wrk: str, tmp: Path, started: list[Process]) -> list[Row]:
        phoenix = start_stack("phoenix", tmp / "phoenix", WORKERS, {})
        started.append(phoenix)
        page = len(httpx.get(phoenix.url + "/", timeout=10).content)
        bare_env = {"PHOENIX_WORKER_APP": "bare_app:application()", "BARE_PAGE_BYTES": str(page)}
        bare = start_stack("bare", tmp / "bare", WORKERS, bare_env)
        started.append(bare)
        bare_page = len(httpx.get(bare.url + "/", timeout=10).content)
        if bare_page != page:
            raise RuntimeError(f"pages differ: phoenix {page} bytes, bare {bare_page}")
        say(f"GET / page: {page} bytes from both stacks")
        return measure(wrk, phoenix, bare, plan)

    return run_bench("phoenix stack bench", plan is QUICK, body)


if __name__ == "__main__":
    sys.exit(main())
