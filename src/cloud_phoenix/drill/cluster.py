"""Drills against a swarm stack, through its edge, loopback only, bounded in count and time:
a crash storm, a replica killed, a rolling update (and one to a broken image), the
replicas following a load, and every answered request in the store exactly once.

Each drill returns a report of what an operator wants to know: failures other than /crash,
the longest time with fewer replicas serving than desired, and how fast the cluster reacted.
"""

from __future__ import annotations

import io
import itertools
import json
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cloud_phoenix.drill.drills import await_records
from cloud_phoenix.drill.loadgen import Injector, Phase, Result, drive
from cloud_phoenix.drill.replicas import Cluster, ReplicaSampler
from cloud_phoenix.drill.stats import summarize
from cloud_phoenix.journal import format_time
from cloud_phoenix.store import open_store
from cloud_phoenix.swarm.stackfile import DRILL_IMAGE_LABEL

Progress = Callable[[str], None]
PATHS = ("/", "/logs?limit=5")
# What a broken image does: its application cannot be loaded, so it never answers /ready.
BROKEN_APP = "cloud_phoenix.no_such_module:app"


def _quiet(_message: str) -> None:
    return None


@dataclass
class Report:
    """One drill's figures; `passed` holds the drill's own promises."""

    drill: str
    sent: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> count, /crash left out
    p50_ms: float | None = None
    p99_ms: float | None = None
    longest_below_desired_s: float = 0.0
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    request_ids: set[str] = field(default_factory=set)  # answered, to find in the store

    @property
    def passed(self) -> bool:
        return not self.failed and not self.problems

    def lines(self) -> list[str]:
        """For a terminal: one figure a line."""
        p50 = "-" if self.p50_ms is None else f"{self.p50_ms:.1f}"
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.1f}"
        shown = [self.drill]
        if self.sent:
            failed = sum(self.failed.values())
            shown = [
                f"{self.drill}: {self.sent} requests, {failed} failed {self.failed or ''}".rstrip(),
                f"  latency p50 / p99          {p50} / {p99} ms",
                f"  longest below desired      {self.longest_below_desired_s:.1f} s",
            ]
        shown += [f"  {name:<26} {value}" for name, value in self.figures.items()]
        shown += [f"  PROBLEM: {problem}" for problem in self.problems]
        return shown


def _load(report: Report, results: list[Result]) -> None:
    summary = summarize(results)
    report.sent += summary.sent
    for reason, count in summary.reasons.items():
        report.failed[reason] = report.failed.get(reason, 0) + count
    report.p50_ms, report.p99_ms = summary.p50_ms, summary.p99_ms
    # Answered by a replica's worker (X-Phoenix-Worker): journaled, so in the store. What
    # an edge answered itself (a 503 with no replica to send to) is in its log instead.
    report.request_ids |= {r.request_id for r in results if r.worker is not None}


def _prefix(name: str) -> str:
    return f"swarm-{name}-{datetime.now(UTC):%H%M%S}"


def crash_storm(
    cluster: Cluster,
    *,
    replicas: int = 3,
    seconds: float = 20.0,
    rps: float = 100.0,
    crash_every: float = 0.25,
    progress: Progress = _quiet,
) -> Report:
    """`rps` req/s for `seconds` s with a /crash every `crash_every` s over `replicas`
    replicas held by hand: no failure but /crash, and no replica restarted or replaced."""
    report = Report("crash storm")
    cluster.pin(replicas, progress=progress)
    tasks, restarts = cluster.task_ids(), cluster.restarts()
    progress(f"crash storm: {seconds:g} s of {rps:g} req/s, a /crash every {crash_every:g} s")
    with ReplicaSampler(cluster) as sampler:
        run = drive(
            cluster.url,
            [Phase(seconds, rps, PATHS)],
            Injector("/crash", crash_every, seconds),
            request_id_prefix=_prefix("crash"),
        )
    _load(report, run.load)
    report.longest_below_desired_s = sampler.longest_below_desired()
    replaced = len(cluster.task_ids() - tasks)
    restarted = cluster.restarts() - restarts
    report.figures.update(
        {"crashes sent": len(run.injected), "tasks replaced": replaced, "restarts": restarted}
    )
    if replaced or restarted:
        report.problems.append(f"{replaced} tasks replaced, {restarted} containers restarted")
    return report


def kill_replica(
    cluster: Cluster,
    *,
    replicas: int = 3,
    seconds: float = 30.0,
    rps: float = 50.0,
    kill_after: float = 5.0,
    progress: Progress = _quiet,
) -> Report:
    """`docker kill -s KILL` of one replica's container under `rps` req/s: no failure, and
    swarm has the slot serving again."""
    report = Report("kill a replica")
    cluster.pin(replicas, progress=progress)
    victim = max(cluster.serving(), key=lambda t: t.slot)
    killed_at: list[float] = []

    def kill(sampler: ReplicaSampler) -> None:
        time.sleep(kill_after)
        progress(f"kill -s KILL the replica of slot {victim.slot} ({victim.container[:12]})")
        killed_at.append(sampler.now())
        cluster.api.kill(victim.container, "KILL")

    progress(f"kill: {seconds:g} s of {rps:g} req/s, a replica killed after {kill_after:g} s")
    with ReplicaSampler(cluster) as sampler:
        killer = threading.Thread(target=kill, args=(sampler,), daemon=True)
        killer.start()
        run = drive(cluster.url, [Phase(seconds, rps, PATHS)], request_id_prefix=_prefix("kill"))
        killer.join()
        back = cluster.await_serving(replicas, 60.0)
    _load(report, run.load)
    report.longest_below_desired_s = sampler.longest_below_desired()
    gone = sampler.first(lambda d, s: s < d, after=killed_at[0])
    served = sampler.first(lambda d, s: s >= d, after=gone) if gone is not None else None
    report.figures["replaced in (s)"] = _seconds(
        served - killed_at[0] if served is not None else back
    )
    return report


def build_image(cluster: Cluster, base: str, tag: str, broken: bool = False) -> None:
    """An image FROM `base`, new to the engine (a label); `broken`: its app cannot load."""
    lines = [f"FROM {base}", f'LABEL {DRILL_IMAGE_LABEL}="{tag}"']
    if broken:
        lines.append(f"ENV PHOENIX_WORKER_APP={BROKEN_APP}")
    dockerfile = ("\n".join(lines) + "\n").encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    cluster.api.build(context.getvalue(), tag)


def rolling_update(
    cluster: Cluster,
    *,
    broken: bool = False,
    replicas: int = 3,
    rps: float = 50.0,
    timeout: float = 180.0,
    progress: Progress = _quiet,
) -> Report:
    """Update the replicas to a new image under `rps` req/s until swarm has finished: it
    completes (a good image) or rolls back by itself (`broken`); no request fails."""
    report = Report("update to a broken image" if broken else "rolling update")
    cluster.pin(replicas, progress=progress)
    service = cluster.api.service(cluster.service)
    base = service.image
    repository = base.split("@")[0].rsplit(":", 1)[0]
    tag = f"{repository}:drill-{'broken-' if broken else ''}{datetime.now(UTC):%H%M%S}"
    progress(f"building {tag} FROM {base}{' (its application cannot load)' if broken else ''}")
    build_image(cluster, base, tag, broken)
    wanted = "rollback_completed" if broken else "completed"
    outcome: dict[str, float | str] = {}

    def update(sampler: ReplicaSampler) -> None:
        time.sleep(3.0)  # some load first
        current = cluster.api.service(cluster.service)
        spec = json.loads(json.dumps(current.spec))
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = tag
        cluster.api.update_service(current, spec)
        started = sampler.now()
        progress(f"updating {cluster.service} to {tag} (start-first, one at a time)")
        while sampler.now() - started < timeout:
            state = cluster.api.service(cluster.service).update_state
            if state in {"completed", "rollback_completed", "paused", "rollback_paused"}:
                outcome.update(state=state, seconds=round(sampler.now() - started, 1))
                return
            time.sleep(0.5)
        outcome.update(state="no end", seconds=timeout)

    with ReplicaSampler(cluster) as sampler:
        updater = threading.Thread(target=update, args=(sampler,), daemon=True)
        updater.start()
        # Load until swarm is done (or `timeout`), 5 s at a time, and 3 s more after that.
        prefix = _prefix("update")
        results: list[Result] = []
        for n in itertools.count():
            running = updater.is_alive()
            phase = Phase(5.0 if running else 3.0, rps, PATHS)
            results += drive(cluster.url, [phase], request_id_prefix=f"{prefix}-{n}").load
            if not running:
                break
        updater.join()
    _load(report, results)
    report.longest_below_desired_s = sampler.longest_below_desired()
    report.figures["swarm's update state"] = str(outcome.get("state"))
    report.figures["update took (s)"] = outcome.get("seconds")
    report.figures["image now"] = cluster.api.service(cluster.service).image
    if outcome.get("state") != wanted:
        report.problems.append(f"the update ended {outcome.get('state')!r}, not {wanted!r}")
    return report


def follow_load(
    cluster: Cluster,
    *,
    rps: float = 60.0,
    seconds: float = 20.0,
    expect: int = 5,
    progress: Progress = _quiet,
) -> Report:
    """`rps` req/s for `seconds` s with the autoscaler deciding: at least `expect` replicas
    serve while the load lasts, and the minimum again once the scale-in window has passed."""
    report = Report("replicas follow the load")
    cluster.unpin()
    settle = cluster.scale_in_window + 90  # the window, then the replicas' drain
    progress(f"autoscaler on; waiting for the minimum, {cluster.min_replicas} replicas")
    cluster.await_serving(cluster.min_replicas, settle)
    progress(f"load: {rps:g} req/s for {seconds:g} s, expecting {expect}+ replicas")
    with ReplicaSampler(cluster) as sampler:
        run = drive(cluster.url, [Phase(seconds, rps, PATHS)], request_id_prefix=_prefix("scale"))
        progress(f"load stopped; back to {cluster.min_replicas} after the window")
        back = cluster.await_serving(cluster.min_replicas, settle)
    _load(report, run.load)
    least = cluster.min_replicas
    decided = sampler.first(lambda desired, _s: desired > least)
    out = sampler.first(lambda _d, serving: serving >= expect)
    report.longest_below_desired_s = sampler.longest_below_desired()
    report.figures.update(
        {
            "scale-out decided in (s)": _seconds(decided),
            f"{expect} replicas serving in (s)": _seconds(out),
            "peak replicas serving": max((s for _a, _d, s in sampler.samples), default=0),
            f"back to {least} after (s)": _seconds(back),
            "scale-in window (s)": cluster.scale_in_window,
        }
    )
    if out is None or out > seconds:
        report.problems.append(f"never {expect} replicas serving while the load lasted")
    return report


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def records(cluster: Cluster, request_ids: set[str], since: str, timeout: float = 60.0) -> Report:
    """Every answered request of the drills in the store exactly once, by X-Request-ID,
    whichever replica (or replacement) answered it."""
    report = Report("records in the store")
    store = open_store(cluster.db_url)
    try:
        found = await_records(store, since, request_ids, timeout)
    finally:
        store.close()
    missing = sorted(request_ids - set(found))
    doubled = sorted(rid for rid in request_ids if found[rid] > 1)
    report.figures.update(
        {
            "answered by a replica": len(request_ids),
            "missing": len(missing),
            "doubled": len(doubled),
        }
    )
    if missing:
        report.problems.append(f"{len(missing)} missing, e.g. {', '.join(missing[:5])}")
    if doubled:
        report.problems.append(f"{len(doubled)} doubled, e.g. {', '.join(doubled[:5])}")
    return report


def since_now() -> str:
    """A `since` for `records`: a second before now, in the journal's time format."""
    return format_time(datetime.now(UTC) - timedelta(seconds=1))
