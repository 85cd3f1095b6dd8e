"""`phoenix status` for people: the status file as Rich tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def render_status(data: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    workers = data.get("workers", {})
    rate = data.get("rate_rps")
    console.print(
        f"[bold]phoenix[/bold] on port {data.get('port')} · supervisor pid "
        f"{data.get('supervisor_pid')} · since {data.get('started')}"
    )
    console.print(
        f"workers [bold]{workers.get('running')}[/bold] running / "
        f"{workers.get('desired')} desired · rate "
        f"{'?' if rate is None else f'{rate:.1f}'} req/s · restarts {data.get('restarts')} · "
        f"longest below desired {data.get('longest_below_desired_s', 0):.2f} s"
    )
    table = Table("process", "pid", "uptime", "restarts", title="stack")
    for name, child in data.get("children", {}).items():
        state = "" if child.get("running") else " [red](down)[/red]"
        table.add_row(
            name + state,
            str(child.get("pid") or "-"),
            f"{child.get('uptime_s')} s",
            str(child.get("restarts")),
        )
    for worker in workers.get("pids", []):
        table.add_row("  worker", str(worker["pid"]), f"{worker['uptime_s']} s", "")
    console.print(table)
    events = Table("time", "event", "message", title="recent events")
    for event in data.get("events", [])[-10:]:
        events.add_row(event["time"], event["kind"], event["message"])
    console.print(events)
