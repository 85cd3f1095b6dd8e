"""`phoenix status` for people: the status file as Rich tables."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloud_phoenix.stack.status import StackStatus


def render_status(status: StackStatus, console: Console | None = None) -> None:
    console = console or Console()
    workers = status.workers
    rate = status.rate_rps
    console.print(
        f"[bold]phoenix[/bold] on port {status.port} · supervisor pid "
        f"{status.supervisor_pid} · since {status.started}"
    )
    console.print(
        f"workers [bold]{workers.running}[/bold] running / "
        f"{workers.desired} desired · rate "
        f"{'?' if rate is None else f'{rate:.1f}'} req/s · restarts {status.restarts} · "
        f"longest below desired {status.longest_below_desired_s:.2f} s"
    )
    table = Table("process", "pid", "uptime", "restarts", title="stack")
    for name, child in status.children.items():
        shown = Text(name)  # names and messages are shown as text, never read as markup
        if not child.running:
            shown.append(" (down)", style="red")
        table.add_row(shown, str(child.pid or "-"), f"{child.uptime_s} s", str(child.restarts))
    for worker in workers.pids:
        table.add_row("  worker", str(worker.pid), f"{worker.uptime_s} s", "")
    console.print(table)
    events = Table("time", "event", "message", title="recent events")
    for event in status.events[-10:]:
        events.add_row(Text(event.time), Text(event.kind), Text(event.message))
    console.print(events)
