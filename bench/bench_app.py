"""Benchmark `phoenix serve` against ceilings measured in the same run; prints ratios.

Run from the repository root: `.venv/bin/python bench/bench_app.py [--quick]`.

1. GET / req/s (wrk, 1 thread) of Phoenix / a bare ASGI app on the same uvicorn setup.
2. /generatecert sustained certificates/s (pool drained) / raw RSA-2048 keygen on all cores.
3. Warm-pool /generatecert median latency / GET / median latency (sequential, one client).
4. GET / p99 (open-loop sampler) while /generatecert is saturated / GET / p99 when idle;
   the bare app sampled the same way, under the same load: what the machine itself does.

Each figure is a ratio taken within a round (both sides back to back, order alternating),
then the median over rounds. Goals are reported PASS/FAIL; the exit status is non-zero only
when the benchmark itself breaks.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from clients import CertClients, KeepAliveClient, open_loop
from clients import keygen_rate as raw_keygen_rate
from report import Process, Row, run_bench, say
from servers import HOST, Server, prime_key_pool, start_bare, start_phoenix, wait_quiet
from stats import median, percentile, round_ratios, spread
from wrk import run_wrk

POOL = 4  # PHOENIX_CERT_POOL given to the server: the spare keys a warm pool holds


@dataclass(frozen=True, slots=True)
class Plan:
    """How long and how many: the full run and the --quick smoke run differ only here."""

    rps_rounds: int = 5
    wrk_seconds: float = 5.0
    connections: int = 32
    cert_rounds: int = 5
    cert_warmup: float = 1.5
    cert_seconds: float = 4.0
    cert_clients: int = 4
    latency_rounds: int = 5
    index_per_cert: int = 20
    p99_rounds: int = 4
    p99_rate: float = 50.0
    p99_seconds: float = 10.0
    hammer_clients: int = 8


FULL = Plan()
QUICK = Plan(
    rps_rounds=1,
    wrk_seconds=2.0,
    cert_rounds=1,
    cert_warmup=1.0,
    cert_seconds=3.0,
    latency_rounds=1,
    index_per_cert=10,
    p99_rounds=1,
    p99_seconds=4.0,
)


def measure_rps(wrk: str, phoenix: Server, bare: Server, plan: Plan) -> list[Row]:
    say(f"\n[1] GET / req/s: wrk -t1 -c{plan.connections} -d{plan.wrk_seconds:g}s, alternating")
    for server in (phoenix, bare):  # warm-up, not counted
        run_wrk(wrk, server.url + "/", plan.connections, 1.0)
    wait_quiet(phoenix, POOL)
    rps: dict[str, list[float]] = {"phoenix": [], "bare": []}
    errors = {"phoenix": 0, "bare": 0}
    catch_up: list[float] = []
    with_catch_up: list[float] = []
    for i in range(plan.rps_rounds):
        for server in (phoenix, bare) if i % 2 == 0 else (bare, phoenix):
            result = run_wrk(wrk, server.url + "/", plan.connections, plan.wrk_seconds)
            rps[server.name].append(result.rps)
            errors[server.name] += result.non_2xx + result.socket_errors
            note = ""
            if server is phoenix:  # the collector's backlog must not run into the next round
                catch_up.append(wait_quiet(phoenix, POOL))
                with_catch_up.append(result.requests / (result.seconds + catch_up[-1]))
                note = f", collector caught up {catch_up[-1]:.1f} s later"
            say(f"  round {i + 1} {server.name:7} {result.rps:8.0f} req/s{note}")
    ratios = round_ratios(rps["phoenix"], rps["bare"])
    return [
        Row(
            "GET / req/s, phoenix / bare",
            ">= 0.5",
            f"{median(ratios):.2f}",
            median(ratios) >= 0.5,
            f"round ratios {spread(ratios)}; medians of {plan.rps_rounds} rounds: phoenix "
            f"{median(rps['phoenix']):.0f} req/s, bare {median(rps['bare']):.0f} req/s; "
            f"failed requests: phoenix {errors['phoenix']}, bare {errors['bare']}",
        ),
        Row(
            "  same, counting collector catch-up",
            "-",
            f"{median(round_ratios(with_catch_up, rps['bare'])):.2f}",
            None,
            f"requests / (round + seconds until the journal was in SQLite); catch-up "
            f"{spread(catch_up, '.1f')} s after a {plan.wrk_seconds:g} s round",
        ),
    ]


def measure_certs(phoenix: Server, plan: Plan) -> list[Row]:
    workers = os.cpu_count() or 1
    say(
        f"\n[2] certificates/s: {plan.cert_clients} clients on /generatecert vs raw keygen "
        f"({workers} threads), {plan.cert_warmup:g} s warm-up + {plan.cert_seconds:g} s"
    )
    rates: dict[str, list[float]] = {"phoenix": [], "raw": []}
    busy, errors = 0, 0
    for i in range(plan.cert_rounds):
        for which in ("phoenix", "raw") if i % 2 == 0 else ("raw", "phoenix"):
            wait_quiet(phoenix, POOL)
            if which == "raw":
                rate = raw_keygen_rate(workers, plan.cert_warmup, plan.cert_seconds)
            else:
                with CertClients(phoenix.url, plan.cert_clients) as clients:
                    start = time.perf_counter() + plan.cert_warmup  # the spare keys go first
                    time.sleep(plan.cert_warmup + plan.cert_seconds)
                    count = clients.completed_between(start, start + plan.cert_seconds)
                rate = count / plan.cert_seconds
                busy += clients.busy
                errors += sum(clients.errors.values())
            rates[which].append(rate)
            say(f"  round {i + 1} {which:7} {rate:6.1f} keys/s")
    ratios = round_ratios(rates["phoenix"], rates["raw"])
    return [
        Row(
            "/generatecert sustained / raw keygen",
            ">= 0.8",
            f"{median(ratios):.2f}",
            median(ratios) >= 0.8,
            f"round ratios {spread(ratios)}; medians of {plan.cert_rounds} rounds: phoenix "
            f"{median(rates['phoenix']):.1f} certs/s, raw {median(rates['raw']):.1f} keys/s "
            f"({workers} threads); 503 answers {busy}, other failures {errors}",
        )
    ]


def measure_latency(phoenix: Server, plan: Plan) -> list[Row]:
    say(
        f"\n[3] sequential latency, warm pool: {POOL - 1} certificates a round, refilled "
        f"in between, {plan.index_per_cert} GET / before each"
    )
    index_rounds: list[float] = []
    cert_rounds: list[float] = []
    for i in range(plan.latency_rounds):
        index: list[float] = []
        cert: list[float] = []
        for _ in range(POOL - 1):
            wait_quiet(phoenix, POOL)
            client = KeepAliveClient(HOST, phoenix.port)
            try:
                client.get("/")  # open the connection's path; not counted
                for _ in range(plan.index_per_cert):
                    started = time.perf_counter()
                    status, _ = client.get("/")
                    index.append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"GET / answered {status}")
                started = time.perf_counter()
                status, _ = client.get("/generatecert")
                cert.append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"GET /generatecert answered {status} with a warm pool")
            finally:
                client.close()
        index_rounds.append(median(index))
        cert_rounds.append(median(cert))
        say(
            f"  round {i + 1} GET / {index_rounds[-1] * 1000:6.2f} ms, /generatecert "
            f"{cert_rounds[-1] * 1000:6.2f} ms (medians)"
        )
    ratios = round_ratios(cert_rounds, index_rounds)
    stall = ""
    if median(index_rounds) > 0.02:  # a ~1 ms page answered in tens of ms on a warm connection
        stall = (
            "; GET / near 40 ms on a keep-alive connection is the Nagle/delayed-ACK stall: "
            "the server's TCP connections lack TCP_NODELAY"
        )
    return [
        Row(
            "warm /generatecert p50 / GET / p50",
            "<= 3",
            f"{median(ratios):.2f}",
            median(ratios) <= 3,
            f"round ratios {spread(ratios)}; medians of {plan.latency_rounds} round medians: "
            f"/generatecert {median(cert_rounds) * 1e3:.2f} ms, GET / "
            f"{median(index_rounds) * 1e3:.2f} ms{stall}",
        )
    ]


def measure_p99(phoenix: Server, bare: Server, plan: Plan) -> list[Row]:
    say(
        f"\n[4] GET / p99, open loop {plan.p99_rate:g} req/s for {plan.p99_seconds:g} s: idle "
        f"vs {plan.hammer_clients} clients hammering /generatecert; the bare app sampled too, "
        "under the same load (the machine's own share of the tail)"
    )
    p99: dict[str, list[float]] = {"idle": [], "saturated": []}
    bare_p99: dict[str, list[float]] = {"idle": [], "saturated": []}
    failed = {"idle": 0, "saturated": 0}
    certs, busy, slips = 0, 0, []
    spawn = multiprocessing.get_context("spawn")  # its own GIL: the hammer threads live here
    with ProcessPoolExecutor(1, mp_context=spawn) as sampler:
        sampler.submit(median, [0.0]).result(timeout=60)  # start the process before timing
        for i in range(plan.p99_rounds):
            for state in ("idle", "saturated") if i % 2 == 0 else ("saturated", "idle"):
                wait_quiet(phoenix, POOL)
                args = (HOST, phoenix.port, "/", plan.p99_rate, plan.p99_seconds)
                bare_args = (HOST, bare.port, "/", plan.p99_rate, plan.p99_seconds)
                if state == "idle":
                    samples = sampler.submit(open_loop, *args).result(timeout=300)
                    ceiling = sampler.submit(open_loop, *bare_args).result(timeout=300)
                else:
                    with CertClients(phoenix.url, plan.hammer_clients) as clients:
                        time.sleep(1.0)  # drain the spare keys: every generator busy
                        started = time.perf_counter()
                        samples = sampler.submit(open_loop, *args).result(timeout=300)
                        certs += clients.completed_between(started, time.perf_counter())
                        ceiling = sampler.submit(open_loop, *bare_args).result(timeout=300)
                    busy += clients.busy
                bare_p99[state].append(percentile(ceiling.latencies, 99))
                p99[state].append(percentile(samples.latencies, 99))
                failed[state] += samples.failed
                slips.extend(samples.slips)
                say(
                    f"  round {i + 1} {state:9} p50 {percentile(samples.latencies, 50) * 1e3:6.2f}"
                    f" ms, p99 {p99[state][-1] * 1e3:7.2f} ms, failed {samples.failed} "
                    f"{samples.failures or ''}; bare app p99 {bare_p99[state][-1] * 1e3:.2f} ms"
                )
    ratios = round_ratios(p99["saturated"], p99["idle"])
    bare_ratios = round_ratios(bare_p99["saturated"], bare_p99["idle"])
    return [
        Row(
            "GET / p99, certs saturated / idle",
            "<= 3",
            f"{median(ratios):.2f}",
            median(ratios) <= 3,
            f"round ratios {spread(ratios)}; medians of {plan.p99_rounds} rounds: saturated "
            f"{median(p99['saturated']) * 1e3:.2f} ms, idle {median(p99['idle']) * 1e3:.2f} ms; "
            f"{certs} certificates issued meanwhile, {busy} answered 503; sampler send slip "
            f"p99 {percentile(slips, 99) * 1e3:.2f} ms",
        ),
        Row(
            "  the bare app's, under the same load",
            "-",
            f"{median(bare_ratios):.2f}",
            None,
            f"round ratios {spread(bare_ratios)}: the bare app (another process) sampled right "
            f"after Phoenix, while Phoenix's certificates are saturated and while idle; "
            f"saturated {median(bare_p99['saturated']) * 1e3:.2f} ms, idle "
            f"{median(bare_p99['idle']) * 1e3:.2f} ms",
        ),
        Row(
            "failed GET / (idle + saturated)",
            "0",
            str(failed["idle"] + failed["saturated"]),
            failed["idle"] + failed["saturated"] == 0,
            f"idle {failed['idle']}, saturated {failed['saturated']} (timeout 5 s)",
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds: a smoke run")
    plan = QUICK if parser.parse_args().quick else FULL

    def body(wrk: str, tmp: Path, started: list[Process]) -> list[Row]:
        phoenix = start_phoenix(tmp / "phoenix", {"PHOENIX_CERT_POOL": str(POOL)})
        started.append(phoenix)
        prime_key_pool(phoenix)
        page = len(httpx.get(phoenix.url + "/", timeout=10).content)
        bare = start_bare(tmp / "bare", page)
        started.append(bare)
        say(f"GET / page: {page} bytes from both servers")
        rows = measure_rps(wrk, phoenix, bare, plan)
        rows += measure_certs(phoenix, plan)
        rows += measure_latency(phoenix, plan)
        return rows + measure_p99(phoenix, bare, plan)

    return run_bench("phoenix bench", plan is QUICK, body)


if __name__ == "__main__":
    sys.exit(main())
