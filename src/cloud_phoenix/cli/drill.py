"""`phoenix drill crash` and `phoenix drill scale`: bounded drills against the local stack;
`phoenix drill swarm ...` against the Docker Swarm stack of scripts/swarm up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.cli.edge import edge, fail, load_settings
from cloud_phoenix.cli.stack import running_stack
from cloud_phoenix.config import Settings

drill = typer.Typer(no_args_is_help=True, help="Bounded drills against the local stack.")


def _stack_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{running_stack(settings).port}"


@drill.command("crash")
@edge
def crash(
    seconds: Annotated[float, typer.Option(min=1, max=600, help="How long.")] = 20.0,
    rps: Annotated[float, typer.Option(min=1, max=2000, help="Background load.")] = 100.0,
    every: Annotated[float, typer.Option(min=0.05, max=60, help="Seconds between crashes.")] = 0.25,
) -> None:
    """A /crash every EVERY s for SECONDS s under RPS req/s of GET / and /logs."""
    from cloud_phoenix.drill.drills import crash_drill
    from cloud_phoenix.store import open_store

    settings = load_settings()
    base_url = _stack_url(settings)
    store = open_store(settings.db_url)
    try:
        report = crash_drill(
            base_url,
            settings.run_dir,
            store,
            seconds=seconds,
            rps=rps,
            crash_every=every,
            progress=typer.echo,
        )
    finally:
        store.close()
    typer.echo(
        f"requests sent        {report.sent} (and {report.crashes} /crash)\n"
        f"failed (not /crash)  {sum(report.failed.values())} {report.failed or ''}\n"
        f"latency p50 / p99    {report.p50_ms or 0:.1f} / {report.p99_ms or 0:.1f} ms\n"
        f"longest below desired workers  {report.longest_below_desired_s:.2f} s\n"
        f"records missing      {len(report.missing)} {report.missing[:5] or ''}\n"
        f"records doubled      {len(report.doubled)} {report.doubled[:5] or ''}"
    )
    typer.secho(
        "PASSED" if report.passed else "FAILED",
        fg=typer.colors.GREEN if report.passed else typer.colors.RED,
    )
    raise typer.Exit(0 if report.passed else 1)


@drill.command("scale")
@edge
def scale(
    rps: Annotated[float, typer.Option(min=1, max=2000, help="Load of the ramp.")] = 50.0,
    seconds: Annotated[float, typer.Option(min=1, max=600, help="How long the load lasts.")] = 10.0,
) -> None:
    """Ramp the load over the scaling threshold and back; report the reaction times."""
    from cloud_phoenix.drill.drills import scale_drill

    settings = load_settings()
    base_url = _stack_url(settings)
    report = scale_drill(
        base_url,
        settings.run_dir,
        rps=rps,
        seconds=seconds,
        rps_per_worker=settings.scale_rps,
        min_workers=settings.min_workers,
        settle=settings.scale_in_window + 15,
        progress=typer.echo,
    )
    out = "never" if report.scale_out_s is None else f"{report.scale_out_s:.1f} s"
    back = "never" if report.scale_in_s is None else f"{report.scale_in_s:.1f} s"
    typer.echo(
        f"{report.target_workers} workers expected for {report.rps:g} req/s; peak "
        f"{report.peak_workers}\nscale-out reached in {out} after the load started\n"
        f"back at {settings.min_workers} in {back} after the load stopped\n"
        f"failed requests {sum(report.failed.values())} {report.failed or ''}"
    )
    raise typer.Exit(0 if report.passed else 1)


swarm = typer.Typer(
    no_args_is_help=True,
    help="Bounded drills against the Docker Swarm stack of scripts/swarm up, through its edge.",
)
drill.add_typer(swarm, name="swarm")
SwarmState = Annotated[Path, typer.Option("--state", help="The state folder of scripts/swarm up.")]
DEFAULT_SWARM_STATE = Path("var") / "swarm"


def _swarm_drills(state: Path, names: list[str]) -> None:
    """Run the named cluster drills in order, then the records check; exit 1 if any failed."""
    from cloud_phoenix.drill import cluster
    from cloud_phoenix.drill.replicas import Cluster
    from cloud_phoenix.swarm.api import DockerApiError

    try:
        target = Cluster.from_folder(state)
    except DockerApiError as exc:
        raise fail(str(exc), exitcodes.UNAVAILABLE) from None
    drills = {
        "crash": lambda: cluster.crash_storm(target, progress=typer.echo),
        "kill": lambda: cluster.kill_replica(target, progress=typer.echo),
        "update": lambda: cluster.rolling_update(target, progress=typer.echo),
        "broken": lambda: cluster.rolling_update(target, broken=True, progress=typer.echo),
        "scale": lambda: cluster.follow_load(target, progress=typer.echo),
    }
    since = cluster.since_now()
    reports = []
    try:
        for name in names:
            reports.append(drills[name]())
            typer.echo("\n".join(reports[-1].lines()))
    except DockerApiError as exc:
        raise fail(str(exc), exc.code) from None
    finally:
        target.unpin()  # the autoscaler decides again, whatever happened
    answered = set().union(*(report.request_ids for report in reports))
    reports.append(cluster.records(target, answered, since))
    typer.echo("\n".join(reports[-1].lines()))
    passed = all(report.passed for report in reports)
    typer.secho(
        "PASSED" if passed else "FAILED",
        fg=typer.colors.GREEN if passed else typer.colors.RED,
    )
    raise typer.Exit(0 if passed else 1)


@swarm.command("crash")
@edge
def swarm_crash(state: SwarmState = DEFAULT_SWARM_STATE) -> None:
    """3 replicas, 100 req/s for 20 s, a /crash every 250 ms: no failure, no restart."""
    _swarm_drills(state, ["crash"])


@swarm.command("kill")
@edge
def swarm_kill(state: SwarmState = DEFAULT_SWARM_STATE) -> None:
    """kill -s KILL one of 3 replicas under 50 req/s: no failure; swarm replaces it."""
    _swarm_drills(state, ["kill"])


@swarm.command("update")
@edge
def swarm_update(state: SwarmState = DEFAULT_SWARM_STATE) -> None:
    """A rolling update to a new image under 50 req/s, then one to a broken image that
    swarm rolls back by itself: no failure."""
    _swarm_drills(state, ["update", "broken"])


@swarm.command("scale")
@edge
def swarm_scale(state: SwarmState = DEFAULT_SWARM_STATE) -> None:
    """60 req/s for 20 s: 5+ replicas while it lasts, the minimum after the window."""
    _swarm_drills(state, ["scale"])


@swarm.command("all")
@edge
def swarm_all(state: SwarmState = DEFAULT_SWARM_STATE) -> None:
    """Every cluster drill in turn, then every answered request in the store exactly once."""
    _swarm_drills(state, ["crash", "kill", "update", "broken", "scale"])
