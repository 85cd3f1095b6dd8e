"""`phoenix drill crash` and `phoenix drill scale`: bounded drills against the local stack."""

from __future__ import annotations

from typing import Annotated

import typer

from cloud_phoenix.cli.edge import edge, load_settings
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
