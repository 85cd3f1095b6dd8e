"""The edge of `phoenix up`: its two listening sockets and HAProxy's configuration for them.

The supervisor owns both sockets for the life of the stack and hands them down (HAProxy
binds the public one by `fd@N`, gunicorn the workers' one by `fd://N`), so a child that
restarts never refuses a connection: clients wait in the backlog.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.config import Settings
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.stack.edge import haproxy
from cloud_phoenix.stack.edge.program import EdgeConfigError, check_config
from cloud_phoenix.stack.edge.stats import STATS_SOCKET
from cloud_phoenix.stack.host import listen


@dataclass
class Edge:
    """The sockets and the checked HAProxy configuration that serves them."""

    public: socket.socket  # PORT: the clients'
    backend: socket.socket  # a free loopback port: the workers'
    config: haproxy.EdgeConfig
    config_path: Path

    def close(self) -> None:
        for sock in (self.public, self.backend):
            sock.close()


def open_edge(settings: Settings, haproxy_bin: str) -> Edge:
    """Listen on PORT and on a free loopback port for the workers, write HAProxy's
    configuration for them under run/, and have HAProxy check it (CannotStart if refused)."""
    # Shared with another stack (PHOENIX_REUSE_PORT: a start-first update), the port is only
    # bound here: HAProxy listens on it when the supervisor starts it, once a worker serves.
    public = listen(
        settings.host,
        settings.port,
        "edge",
        reuse_port=settings.reuse_port,
        listening=not settings.reuse_port,
    )
    backend = listen("127.0.0.1", 0, "workers")
    config = haproxy.EdgeConfig(
        edge_fd=public.fileno(),
        servers=(f"127.0.0.1:{backend.getsockname()[1]}",),
        stats_socket=settings.run_dir.resolve() / STATS_SOCKET,
        hard_stop_after=f"{settings.graceful_timeout:g}s",
        served_by=f"phoenix-edge-{os.getpid()}",
    )
    path = settings.run_dir / "haproxy.cfg"
    edge = Edge(public, backend, config, path)
    try:
        path.write_text(haproxy.render(config))
        check_config(haproxy_bin, path, pass_fds=(public.fileno(),))
    except EdgeConfigError as exc:
        edge.close()
        raise CannotStart(
            f"HAProxy refuses the rendered configuration: {exc}", exitcodes.CONFIG
        ) from None
    except BaseException:
        edge.close()
        raise
    return edge
