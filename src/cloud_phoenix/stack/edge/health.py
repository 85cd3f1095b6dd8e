"""`python -m cloud_phoenix.stack.edge.health`: a container's health check that asks its own
stack, not its address. Exit 0 when this stack's edge runs and its last check of the
workers passed; 1, with the reason on stderr, when not.

It reads the edge's admin socket in PHOENIX_HOME/run, which is the container's own. The
address is not: with PHOENIX_REUSE_PORT another stack may answer on it (the old task of a
start-first update), and a probe through it would call healthy a replica that cannot serve,
so that the orchestrator stops the old one for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cloud_phoenix.config import Settings
from cloud_phoenix.stack.edge.stats import STATS_SOCKET, EdgeStats, EdgeStatsError

PASSED = "L7OK"  # HAProxy's check_status of a check that got its 200


def why_unhealthy(stats: EdgeStats) -> str | None:
    """None if a server of the edge is UP with its last check passed, else why not."""
    try:
        servers = stats.servers()
    except EdgeStatsError as exc:
        return str(exc)
    for server in servers:
        if server.get("status", "").startswith("UP") and server.get("check_status") == PASSED:
            return None
    shown = ", ".join(
        f"{s.get('svname')} {s.get('status')} ({s.get('check_status') or 'no check yet'})"
        for s in servers
    )
    return f"no worker passes the edge's check: {shown or 'no server'}"


def main() -> int:
    home = Path(os.environ.get("PHOENIX_HOME") or Settings().home)
    stats = EdgeStats(Settings(home=home).run_dir / STATS_SOCKET, timeout=2.0)
    reason = why_unhealthy(stats)
    if reason is not None:
        sys.stderr.write(f"unhealthy: {reason}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
